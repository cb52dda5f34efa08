// Command pulumi-language-python is the Python language host that edgefabric's
// offline engine build uses.
//
// Why it exists: the Go module proxy serves pulumi's pkg/v3 and sdk/v3 modules
// (the CLI builds from them), but refuses pulumi's own language-host module
// (github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3 answers
// 403 "This module version is not available" for every version). The engine
// needs a gRPC LanguageRuntime server to run a Python program, so this is a
// small one, written against the LanguageRuntime protocol of sdk/v3 at the same
// release as the CLI. It does what `pulumi up/preview/refresh/destroy` and
// policy packs need:
//
//   - Run: start `python -u pulumi-language-python-exec ...` (the exec script
//     ships in the sdk/v3 module zip and is installed next to this binary),
//     with the stack config in PULUMI_CONFIG / PULUMI_CONFIG_SECRET_KEYS.
//   - RunPlugin: start a Python policy pack (`python -u <dir>`), streaming its
//     output back to the engine.
//   - the `virtualenv` runtime option of Pulumi.yaml selects the interpreter.
//
// It reports no required plugins: on this machine plugins cannot be
// downloaded, and the python dynamic-provider shim is found on PATH.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	"github.com/pulumi/pulumi/sdk/v3/go/common/version"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
)

const (
	execScriptName = "pulumi-language-python-exec"
	// The exec script exits with this code after it has already shown the
	// user an actionable error; the engine must then stop without adding noise.
	bailExitCode = 32
	// How often to check that the engine is still alive. Short, so that a
	// killed `pulumi up` does not leave this host behind for long.
	engineHealthInterval = 10 * time.Second
)

func main() {
	if err := serve(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "pulumi-language-python: %v\n", err)
		os.Exit(1)
	}
}

// serve starts the gRPC server and prints its port, which is how the engine
// learns where to connect. The engine passes its own address as the last
// positional argument; older engines also pass -flags, which we ignore.
func serve(args []string) error {
	engineAddress := ""
	for _, a := range args {
		if !strings.HasPrefix(a, "-") {
			engineAddress = a
		}
	}
	execPath, err := findExecScript()
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stop := make(chan bool)
	go func() {
		<-ctx.Done()
		close(stop)
	}()
	if engineAddress != "" {
		if err := rpcutil.Healthcheck(ctx, engineAddress, engineHealthInterval, cancel); err != nil {
			return fmt.Errorf("could not start engine health check: %w", err)
		}
	}

	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Cancel: stop,
		Init: func(srv *grpc.Server) error {
			pulumirpc.RegisterLanguageRuntimeServer(srv, &host{
				ctx: ctx, engineAddress: engineAddress, execPath: execPath,
			})
			return nil
		},
	})
	if err != nil {
		return fmt.Errorf("could not start the language host gRPC server: %w", err)
	}
	fmt.Printf("%d\n", handle.Port)
	if err := <-handle.Done; err != nil {
		return fmt.Errorf("language host stopped serving: %w", err)
	}
	return nil
}

// findExecScript looks next to the real binary first (the install keeps the
// script beside it), then next to the path it was started by (a symlink in
// .tools/bin).
func findExecScript() (string, error) {
	var candidates []string
	if self, err := os.Executable(); err == nil {
		if real, err := filepath.EvalSymlinks(self); err == nil {
			candidates = append(candidates, filepath.Join(filepath.Dir(real), execScriptName))
		}
		candidates = append(candidates, filepath.Join(filepath.Dir(self), execScriptName))
	}
	if p, err := exec.LookPath(execScriptName); err == nil {
		candidates = append(candidates, p)
	}
	for _, c := range candidates {
		if st, err := os.Stat(c); err == nil && !st.IsDir() {
			return c, nil
		}
	}
	return "", fmt.Errorf("missing %s next to the language host (looked in %v); re-run `make engine`",
		execScriptName, candidates)
}

type host struct {
	pulumirpc.UnimplementedLanguageRuntimeServer
	// ctx ends when the engine is gone (failed health check): the programs we started are
	// then stopped too, instead of waiting forever on a resource monitor that no longer exists.
	ctx           context.Context
	engineAddress string
	execPath      string
}

// command builds a child process that is stopped (SIGTERM, then SIGKILL) when ctx ends.
func command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

func (h *host) Handshake(
	context.Context, *pulumirpc.LanguageHandshakeRequest,
) (*pulumirpc.LanguageHandshakeResponse, error) {
	return &pulumirpc.LanguageHandshakeResponse{}, nil
}

func (h *host) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: strings.TrimPrefix(version.Version, "v")}, nil
}

func (h *host) GetRequiredPlugins(
	context.Context, *pulumirpc.GetRequiredPluginsRequest,
) (*pulumirpc.GetRequiredPluginsResponse, error) {
	return &pulumirpc.GetRequiredPluginsResponse{}, nil
}

func (h *host) GetRequiredPackages(
	context.Context, *pulumirpc.GetRequiredPackagesRequest,
) (*pulumirpc.GetRequiredPackagesResponse, error) {
	return &pulumirpc.GetRequiredPackagesResponse{}, nil
}

// interpreter is the Python to run and the environment changes it needs.
type interpreter struct {
	python string
	// venv is the activated virtual environment, "" when none.
	venv string
}

func (i interpreter) env(base []string) []string {
	if i.venv == "" {
		return base
	}
	out := make([]string, 0, len(base)+2)
	path := ""
	for _, kv := range base {
		switch {
		case strings.HasPrefix(kv, "PATH="):
			path = strings.TrimPrefix(kv, "PATH=")
		case strings.HasPrefix(kv, "PYTHONHOME="), strings.HasPrefix(kv, "VIRTUAL_ENV="):
			// A PYTHONHOME from the caller would point the venv's python at
			// another installation's standard library.
		default:
			out = append(out, kv)
		}
	}
	bin := filepath.Join(i.venv, "bin")
	if path == "" {
		path = bin
	} else {
		path = bin + string(os.PathListSeparator) + path
	}
	return append(out, "PATH="+path, "VIRTUAL_ENV="+i.venv)
}

// resolveInterpreter reads the runtime options (`runtime.options` in
// Pulumi.yaml or PulumiPolicy.yaml) and picks the interpreter.
func resolveInterpreter(info *pulumirpc.ProgramInfo) (interpreter, error) {
	opts := map[string]any{}
	root := ""
	if info != nil {
		root = info.GetRootDirectory()
		if o := info.GetOptions(); o != nil {
			opts = o.AsMap()
		}
	}
	if tc, ok := opts["toolchain"].(string); ok && tc != "" && tc != "pip" {
		return interpreter{}, fmt.Errorf(
			"runtime option toolchain=%q is not supported by this language host; allowed: \"pip\" "+
				"(with the `virtualenv` option)", tc)
	}
	if tc, ok := opts["typechecker"].(string); ok && tc != "" {
		return interpreter{}, fmt.Errorf(
			"runtime option typechecker=%q is not supported by this language host; remove it", tc)
	}
	if raw, ok := opts["virtualenv"]; ok {
		venv, isString := raw.(string)
		if !isString || venv == "" {
			return interpreter{}, fmt.Errorf("runtime option virtualenv=%v must be a non-empty path", raw)
		}
		if !filepath.IsAbs(venv) {
			venv = filepath.Join(root, venv)
		}
		python := filepath.Join(venv, "bin", "python")
		if _, err := os.Stat(python); err != nil {
			return interpreter{}, fmt.Errorf(
				"the 'virtualenv' runtime option points to %q, which has no bin/python; create it with "+
					"`python3 -m venv %s && %s -m pip install -r requirements.txt`", venv, venv, python)
		}
		return interpreter{python: python, venv: venv}, nil
	}
	cmd := os.Getenv("PULUMI_PYTHON_CMD")
	if cmd == "" {
		cmd = "python3"
	}
	python, err := exec.LookPath(cmd)
	if err != nil {
		return interpreter{}, fmt.Errorf("no Python interpreter %q on PATH (set the `virtualenv` runtime "+
			"option in Pulumi.yaml, or PULUMI_PYTHON_CMD): %w", cmd, err)
	}
	return interpreter{python: python}, nil
}

// programPath is the file or directory runpy should run: the entry point
// relative to the program directory ("." means its __main__.py).
func programPath(req *pulumirpc.RunRequest) string {
	info := req.GetInfo()
	entry := "."
	dir := req.GetPwd()
	if info != nil {
		if info.GetEntryPoint() != "" {
			entry = info.GetEntryPoint()
		}
		if info.GetProgramDirectory() != "" {
			dir = info.GetProgramDirectory()
		}
	} else if req.GetProgram() != "" { //nolint:staticcheck // engines before ProgramInfo
		entry = req.GetProgram() //nolint:staticcheck
	}
	if filepath.IsAbs(entry) || dir == "" {
		return entry
	}
	return filepath.Join(dir, entry)
}

func (h *host) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	py, err := resolveInterpreter(req.GetInfo())
	if err != nil {
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}
	args := []string{"-u", h.execPath}
	add := func(flag, value string) {
		if value != "" {
			args = append(args, "--"+flag, value)
		}
	}
	add("monitor", req.GetMonitorAddress())
	add("engine", h.engineAddress)
	add("project", req.GetProject())
	add("stack", req.GetStack())
	add("pwd", req.GetPwd())
	add("dry_run", fmt.Sprintf("%t", req.GetDryRun()))
	add("parallel", fmt.Sprint(req.GetParallel()))
	add("organization", req.GetOrganization())
	if info := req.GetInfo(); info != nil {
		add("root_directory", info.GetRootDirectory())
	}
	args = append(args, programPath(req))
	args = append(args, req.GetArgs()...)

	// Always a JSON object: the exec script iterates over it, and `null` (a stack without any
	// config) would crash it before the program starts.
	configMap := req.GetConfig()
	if configMap == nil {
		configMap = map[string]string{}
	}
	config, err := json.Marshal(configMap)
	if err != nil {
		return nil, fmt.Errorf("serialize config: %w", err)
	}
	secretKeys := req.GetConfigSecretKeys()
	if secretKeys == nil {
		secretKeys = []string{}
	}
	secretJSON, err := json.Marshal(secretKeys)
	if err != nil {
		return nil, fmt.Errorf("serialize secret config keys: %w", err)
	}

	cmd := command(h.ctx, py.python, args...)
	cmd.Dir = req.GetPwd()
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr
	cmd.Env = append(py.env(os.Environ()),
		"PULUMI_CONFIG="+string(config),
		"PULUMI_CONFIG_SECRET_KEYS="+string(secretJSON))
	err = cmd.Run()
	// The engine reads our stdout/stderr; flush before answering so the
	// program's last lines appear before the engine's summary.
	_ = os.Stdout.Sync()
	_ = os.Stderr.Sync()
	if err == nil {
		return &pulumirpc.RunResponse{}, nil
	}
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		if exitErr.ExitCode() == bailExitCode {
			return &pulumirpc.RunResponse{Bail: true}, nil
		}
		return &pulumirpc.RunResponse{
			Error: fmt.Sprintf("program exited with non-zero exit code: %d", exitErr.ExitCode()),
		}, nil
	}
	return &pulumirpc.RunResponse{
		Error: fmt.Sprintf("could not start %s %s: %v", py.python, h.execPath, err),
	}, nil
}

// streamWriter forwards a child's output to the engine as RunPlugin messages.
// gRPC streams are not safe for concurrent Send, hence the shared lock.
type streamWriter struct {
	mu     *sync.Mutex
	stream grpc.ServerStreamingServer[pulumirpc.RunPluginResponse]
	stderr bool
}

func (w streamWriter) Write(p []byte) (int, error) {
	buf := append([]byte(nil), p...)
	msg := &pulumirpc.RunPluginResponse{Output: &pulumirpc.RunPluginResponse_Stdout{Stdout: buf}}
	if w.stderr {
		msg = &pulumirpc.RunPluginResponse{Output: &pulumirpc.RunPluginResponse_Stderr{Stderr: buf}}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.stream.Send(msg); err != nil {
		return 0, err
	}
	return len(p), nil
}

// RunPlugin runs a Python plugin program (a policy pack) from its directory.
func (h *host) RunPlugin(
	req *pulumirpc.RunPluginRequest, stream grpc.ServerStreamingServer[pulumirpc.RunPluginResponse],
) error {
	py, err := resolveInterpreter(req.GetInfo())
	if err != nil {
		return err
	}
	program := req.GetProgram()
	if info := req.GetInfo(); info != nil && info.GetProgramDirectory() != "" {
		program = info.GetProgramDirectory()
		if e := info.GetEntryPoint(); e != "" && e != "." {
			program = filepath.Join(program, e)
		}
	}
	if program == "" {
		return errors.New("RunPlugin: no program given")
	}
	args := append([]string{"-u", program}, req.GetArgs()...)
	cmd := command(stream.Context(), py.python, args...)
	cmd.Dir = req.GetPwd()
	// Later duplicates win in os/exec, so the request's env overrides ours.
	cmd.Env = append(py.env(os.Environ()), req.GetEnv()...)
	var mu sync.Mutex
	cmd.Stdout = streamWriter{mu: &mu, stream: stream}
	cmd.Stderr = streamWriter{mu: &mu, stream: stream, stderr: true}
	err = cmd.Run()
	code := 0
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		code = exitErr.ExitCode()
	default:
		return fmt.Errorf("could not start plugin %s: %w", program, err)
	}
	mu.Lock()
	defer mu.Unlock()
	return stream.Send(&pulumirpc.RunPluginResponse{
		Output: &pulumirpc.RunPluginResponse_Exitcode{Exitcode: int32(code)},
	})
}

// About is what `pulumi about` prints for the language.
func (h *host) About(ctx context.Context, req *pulumirpc.AboutRequest) (*pulumirpc.AboutResponse, error) {
	py, err := resolveInterpreter(req.GetInfo())
	if err != nil {
		return nil, err
	}
	out, err := exec.CommandContext(ctx, py.python, "--version").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("%s --version: %w", py.python, err)
	}
	v := strings.TrimSpace(strings.TrimPrefix(string(out), "Python "))
	meta := map[string]string{}
	if py.venv != "" {
		meta["virtualenv"] = py.venv
	}
	return &pulumirpc.AboutResponse{Executable: py.python, Version: v, Metadata: meta}, nil
}

// RuntimeOptionsPrompts: nothing to ask; the options come from Pulumi.yaml.
func (h *host) RuntimeOptionsPrompts(
	context.Context, *pulumirpc.RuntimeOptionsRequest,
) (*pulumirpc.RuntimeOptionsResponse, error) {
	return &pulumirpc.RuntimeOptionsResponse{}, nil
}

var (
	_ io.Writer                       = streamWriter{}
	_ pulumirpc.LanguageRuntimeServer = (*host)(nil)
)
