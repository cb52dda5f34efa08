//go:build tools

// Package deps records, for `go mod tidy`, the packages build.sh compiles: the provider's
// cmd/pulumi-resource-kubernetes main package (copied from the module cache into a writable build
// directory at build time, because its embedded schema files are generated) imports the first two,
// and that package's generate.go imports the codegen schema package.
package deps

import (
	_ "github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/provider"
	_ "github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version"
	_ "github.com/pulumi/pulumi/pkg/v3/codegen/schema"
)
