// Package userspb is the generated code of the users service
// (users.proto): the messages and the UserService client and server.
package userspb

//go:generate protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative users.proto
