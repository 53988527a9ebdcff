package cache

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
)

// TestJSONCodecAsUnmarshal: JSONCodec.Unmarshal, which reuses decoders,
// gives what json.Unmarshal gives: the same error, and on success the same
// value, whatever was decoded before (a leftover of one value never leaks
// into the next).
func TestJSONCodecAsUnmarshal(t *testing.T) {
	inputs := []string{
		`{"id":1,"name":"a","price":1.5,"tags":["x","y"]}`,
		`  {"id":2}  `,
		`123`,
		`12 `,
		`"str"`,
		`null`,
		`[1,2,3]`,
		`{"id":3} {"id":4}`, // two values: an error, as for Unmarshal
		`{"id":5} x`,
		`{"id":`,
		`1 2`,
		`{"id":"not a number"}`,
		``,
		`{"id":6,"name":"` + string(make([]byte, 20<<10)) + `"}`, // past the pooled size, invalid bytes
	}
	decode := func(name string, into func() any) {
		for range 2 { // twice: the second round reuses decoders
			for _, in := range inputs {
				got, want := into(), into()
				gotErr := JSONCodec{}.Unmarshal([]byte(in), got)
				wantErr := json.Unmarshal([]byte(in), want)
				if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) || (wantErr == nil && !reflect.DeepEqual(got, want)) {
					t.Errorf("%s %.40q: got %+v, %v; json.Unmarshal gives %+v, %v", name, in, got, gotErr, want, wantErr)
				}
			}
		}
	}
	decode("product", func() any { return new(product) })
	decode("int", func() any { return new(int) })
	decode("any", func() any { return new(any) })
	decode("[]int", func() any { return new([]int) })
}

func TestJSONCodecAllocations(t *testing.T) {
	data, _ := json.Marshal(sampleProduct(1))
	var p product
	codec := JSONCodec{}
	_ = codec.Unmarshal(data, &p)
	got := testing.AllocsPerRun(100, func() { p = product{}; _ = codec.Unmarshal(data, &p) })
	want := testing.AllocsPerRun(100, func() { p = product{}; _ = json.Unmarshal(data, &p) })
	t.Logf("JSONCodec.Unmarshal %v allocs, json.Unmarshal %v", got, want)
	if got >= want {
		t.Errorf("JSONCodec.Unmarshal: %v allocations, json.Unmarshal %v: want fewer", got, want)
	}
}
