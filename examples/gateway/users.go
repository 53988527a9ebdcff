package main

import (
	"context"
	"net/http"
	"strconv"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/goaspire/goaspire/examples/internal/httpapi"
	"github.com/goaspire/goaspire/examples/users/userspb"
	"github.com/goaspire/goaspire/integrations/aspiregrpc"
	"github.com/goaspire/goaspire/servicedefaults"
)

// usersAPI answers GET /api/users/{id} by calling the users service over
// gRPC, found by its logical name through aspiregrpc.Client: every instance
// the AppHost injected (services__users__grpc__N), round-robin, with
// GetUser retried on another instance when one goes away (the proto
// declares it free of side effects).
type usersAPI struct {
	app   *servicedefaults.App
	users userspb.UserServiceClient
}

func newUsersAPI(ctx context.Context, app *servicedefaults.App) (*usersAPI, error) {
	conn, err := aspiregrpc.Client(ctx, app, "users")
	if err != nil {
		return nil, err
	}
	return &usersAPI{app: app, users: userspb.NewUserServiceClient(conn)}, nil
}

type user struct {
	ID       int32  `json:"id"`
	Name     string `json:"name"`
	ServedBy string `json:"servedBy"`
}

func (u *usersAPI) get(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 32)
	if err != nil {
		httpapi.WriteError(w, http.StatusBadRequest, "invalid_id", "the id must be a number")
		return
	}
	var header metadata.MD
	resp, err := u.users.GetUser(r.Context(), &userspb.UserRequest{Id: int32(id)}, grpc.Header(&header))
	if err != nil {
		switch status.Code(err) {
		case codes.InvalidArgument:
			httpapi.WriteError(w, http.StatusBadRequest, "invalid_id", status.Convert(err).Message())
		case codes.NotFound:
			httpapi.WriteError(w, http.StatusNotFound, "not_found", "no such user")
		default:
			u.app.Logger().WarnContext(r.Context(), "calling the users service failed", "error", err)
			httpapi.WriteError(w, http.StatusBadGateway, "users_unavailable", "the users service did not answer")
		}
		return
	}
	var servedBy string
	if v := header.Get("served-by"); len(v) > 0 {
		servedBy = v[0]
	}
	w.Header().Set("X-Served-By", servedBy)
	httpapi.WriteJSON(w, http.StatusOK, user{ID: resp.GetId(), Name: resp.GetName(), ServedBy: servedBy})
}
