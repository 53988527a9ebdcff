package cache

import (
	"crypto/tls"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// secret is a password marker: no error may contain it.
const secret = "s3cr3t-M4rker"

func TestParseConnectionString(t *testing.T) {
	base := func(f func(o *redis.UniversalOptions)) *redis.UniversalOptions {
		o := &redis.UniversalOptions{
			DialTimeout:           5 * time.Second,
			ReadTimeout:           5 * time.Second,
			WriteTimeout:          5 * time.Second,
			DialerRetries:         3,
			ContextTimeoutEnabled: true,
		}
		f(o)
		return o
	}
	tlsCfg := func(f func(*tls.Config)) *tls.Config {
		c := &tls.Config{MinVersion: tls.VersionTLS12}
		if f != nil {
			f(c)
		}
		return c
	}
	tests := []struct {
		name string
		in   string
		want *redis.UniversalOptions
	}{
		{"aspire 8", "localhost:6379,password=" + secret, base(func(o *redis.UniversalOptions) {
			o.Addrs = []string{"localhost:6379"}
			o.Password = secret
		})},
		{"aspire 13 with tls", "localhost:6380,password=" + secret + ",ssl=true", base(func(o *redis.UniversalOptions) {
			o.Addrs = []string{"localhost:6380"}
			o.Password = secret
			o.TLSConfig = tlsCfg(nil)
		})},
		{"aspire 13 without tls", "localhost:6379,password=p,ssl=False", base(func(o *redis.UniversalOptions) {
			o.Addrs = []string{"localhost:6379"}
			o.Password = "p"
		})},
		{"default port", "cache", base(func(o *redis.UniversalOptions) { o.Addrs = []string{"cache:6379"} })},
		{"default tls port", "cache,ssl=true", base(func(o *redis.UniversalOptions) {
			o.Addrs = []string{"cache:6380"}
			o.TLSConfig = tlsCfg(nil)
		})},
		{"sentinel", "s1,s2:26380,serviceName=mymaster", base(func(o *redis.UniversalOptions) {
			o.Addrs = []string{"s1:26379", "s2:26380"}
			o.MasterName = "mymaster"
		})},
		{"sentinel with credentials", "s1,serviceName=mymaster,user=u,password=" + secret, base(func(o *redis.UniversalOptions) {
			o.Addrs = []string{"s1:26379"}
			o.MasterName = "mymaster"
			o.Username, o.Password = "u", secret
			o.SentinelUsername, o.SentinelPassword = "u", secret
		})},
		{"cluster seeds, duplicates dropped", "a:7000,b:7001,a:7000", base(func(o *redis.UniversalOptions) { o.Addrs = []string{"a:7000", "b:7001"} })},
		{"ipv6", "[::1]:6379,::1", base(func(o *redis.UniversalOptions) { o.Addrs = []string{"[::1]:6379"} })},
		{"all meaningful options, any case", "h:1,USER=u,Password=p,name=svc,defaultDatabase=3,connectTimeout=1500,syncTimeout=2000,asyncTimeout=3000,connectRetry=5,protocol=resp2,setlib=false,abortConnect=false",
			base(func(o *redis.UniversalOptions) {
				o.Addrs = []string{"h:1"}
				o.Username, o.Password, o.ClientName, o.DB = "u", "p", "svc", 3
				o.DialTimeout = 1500 * time.Millisecond
				o.ReadTimeout, o.WriteTimeout = 3*time.Second, 3*time.Second
				o.DialerRetries = 5
				o.Protocol = 2
				o.DisableIdentity = true
			})},
		{"tls options", "h,ssl=true,sslHost=redis.example,sslProtocols=Tls12|Tls13", base(func(o *redis.UniversalOptions) {
			o.Addrs = []string{"h:6380"}
			o.TLSConfig = tlsCfg(func(c *tls.Config) {
				c.ServerName = "redis.example"
				c.MaxVersion = tls.VersionTLS13
			})
		})},
		{"accepted without effect", "h:1,allowAdmin=true,keepAlive=60,resolveDns=false,checkCertificateRevocation=false,configChannel=x,tiebreaker=y,version=7.2,proxy=None,responseTimeout=5,highPriorityThreads=true,$CONFIG=,writeBuffer=1",
			base(func(o *redis.UniversalOptions) { o.Addrs = []string{"h:1"} })},
		{"disabled CLIENT command", "h:1,$CLIENT=", base(func(o *redis.UniversalOptions) {
			o.Addrs = []string{"h:1"}
			o.DisableIdentity = true
		})},
		{"connectRetry=0 still dials once", "h:1,connectRetry=0", base(func(o *redis.UniversalOptions) {
			o.Addrs = []string{"h:1"}
			o.DialerRetries = 1
		})},
		{"unix socket", "/run/redis.sock", base(func(o *redis.UniversalOptions) { o.Addrs = []string{"/run/redis.sock"} })},
		{"url", "redis://:" + secret + "@localhost:6379/2", base(func(o *redis.UniversalOptions) {
			o.Addrs = []string{"localhost:6379"}
			o.Password = secret
			o.DB = 2
		})},
		{"url with user and options", "rediss://app:pw@cache.example?name=svc&syncTimeout=100", base(func(o *redis.UniversalOptions) {
			o.Addrs = []string{"cache.example:6380"}
			o.Username, o.Password, o.ClientName = "app", "pw", "svc"
			o.ReadTimeout, o.WriteTimeout = 100*time.Millisecond, 100*time.Millisecond
			o.TLSConfig = tlsCfg(nil)
		})},
		{"url password only", "redis://pw@h:1", base(func(o *redis.UniversalOptions) {
			o.Addrs = []string{"h:1"}
			o.Password = "pw"
		})},
		{"url tcp scheme", "tcp://h:1", base(func(o *redis.UniversalOptions) { o.Addrs = []string{"h:1"} })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseConnectionString(tt.in)
			if err != nil {
				t.Fatalf("ParseConnectionString: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
				if got.TLSConfig != nil && tt.want.TLSConfig != nil {
					g, w := got.TLSConfig, tt.want.TLSConfig
					t.Errorf("tls got %q %x-%x, want %q %x-%x", g.ServerName, g.MinVersion, g.MaxVersion, w.ServerName, w.MinVersion, w.MaxVersion)
				}
			}
		})
	}
}

func TestParseConnectionStringErrors(t *testing.T) {
	tests := []struct {
		name, in, wantMsg string
	}{
		{"empty", "  ", "empty"},
		{"no endpoint", "password=" + secret, "no endpoint"},
		{"unknown option", "h,frobnicate=1,password=" + secret, `unknown option "frobnicate"`},
		{"bad bool", "h,ssl=maybe", `option "ssl": want true or false`},
		{"bad int", "h,connectTimeout=" + secret, `option "connectTimeout": want an integer`},
		{"negative db", "h,defaultDatabase=-1", `option "defaultDatabase": must be at least 0`},
		{"bad port", "h:" + secret, "endpoint 1: invalid port"},
		{"bad port range", "h:70000", "invalid port"},
		{"bad protocol", "h,protocol=resp9", `option "protocol"`},
		{"ssl3", "h,sslProtocols=Ssl3", "not supported"},
		{"tunnel", "h,tunnel=http:proxy:8080", `option "tunnel"`},
		{"renamed command", "h,$CONFIG=" + secret, "renaming commands"},
		{"cluster db", "a:1,b:2,defaultDatabase=1", "database 0"},
		{"bad url", "redis://:" + secret + "@host:port:x", "not a valid URL"},
		{"url scheme", "http://:" + secret + "@h", `unsupported URL scheme "http"`},
		{"url no host", "redis://", "no host"},
		{"url db", "redis://h/" + secret, "database number"},
		{"url query", "redis://h?frob=" + secret, `unknown option "frob"`},
		{"empty option name", "h,=" + secret, "empty option name"},
		{"password cut by a comma", "h,password=ab," + secret + ",ssl=true", `item 3 follows "password"`},
		{"password cut by a comma, rest looks like an option", "h,password=ab," + secret + "=x", `item 3 follows "password"`},
		{"unknown option that is not a name", "h,a-" + secret + "=1", "item 2 is an unknown option"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConnectionString(tt.in)
			if err == nil {
				t.Fatalf("ParseConnectionString(%q) succeeded", tt.in)
			}
			if !errors.Is(err, ErrConnectionString) {
				t.Errorf("error %v does not wrap ErrConnectionString", err)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not say %q", err, tt.wantMsg)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error %q leaks the secret", err)
			}
		})
	}
}

func FuzzParseConnectionString(f *testing.F) {
	for _, s := range []string{
		"localhost:6379,password=" + secret,
		"a:1,b:2,ssl=true,sslProtocols=Tls12|Tls13,serviceName=m",
		"redis://user:" + secret + "@h:6379/1?name=x",
		"rediss://" + secret + "@[::1]:6380",
		"h,$CLIENT=,connectTimeout=" + secret,
		"[::1,password=" + secret,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		o, err := ParseConnectionString(s)
		if err != nil {
			if !errors.Is(err, ErrConnectionString) {
				t.Fatalf("error %v does not wrap ErrConnectionString", err)
			}
			if strings.Contains(err.Error(), secret) {
				t.Fatalf("error %q leaks the secret marker", err)
			}
			return
		}
		if len(o.Addrs) == 0 {
			t.Fatalf("no addresses and no error for %q", s)
		}
		for _, a := range o.Addrs {
			if a == "" {
				t.Fatalf("empty address from %q", s)
			}
		}
	})
}
