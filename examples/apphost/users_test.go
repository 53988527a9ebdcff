package main

import (
	"strings"
	"testing"
)

// TestStartUsersInjects: each users instance gets an HTTP and a gRPC
// port; the gateway gets every instance's gRPC endpoint in the indexed
// form and the first in the Aspire 13 form.
func TestStartUsersInjects(t *testing.T) {
	st := &stack{dir: t.TempDir()}
	gw, err := st.startUsers(config{}, map[string]string{"users": "/bin/users"})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.users) != usersInstances {
		t.Fatalf("%d users instances, want %d", len(st.users), usersInstances)
	}
	for i, u := range st.users {
		env := strings.Join(u.env, "\n")
		port := lookupEnv(u.env, "GRPC_PORT")
		if lookupEnv(u.env, "PORT") == "" || port == "" {
			t.Fatalf("%s environment lacks PORT or GRPC_PORT:\n%s", u.name, env)
		}
		key := "services__users__grpc__" + string(rune('0'+i))
		if want := "http://127.0.0.1:" + port; gw[key] != want {
			t.Errorf("gateway %s = %q, want %q", key, gw[key], want)
		}
	}
	if gw["USERS_GRPC"] != gw["services__users__grpc__0"] {
		t.Errorf("USERS_GRPC = %q, want the first instance", gw["USERS_GRPC"])
	}
}
