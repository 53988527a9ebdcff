package aspireazure

import (
	"errors"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/goaspire/goaspire/discovery"
)

// defaultCredential is the credential of a source given none.
// TODO(#24): NewCredential(cfg) once the foundation lands.
func defaultCredential(*discovery.Config) (azcore.TokenCredential, error) {
	return nil, errors.New("no credential: set KeyVaultSettings.Credential")
}
