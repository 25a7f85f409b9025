package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/importer"
	"go/token"
	"go/types"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/nexcage/nexcage/internal/testenv"
)

// TestPublicAPINamesOnlyPublicTypes walks the exported API of every public
// package of the module with go/types and fails on any exported function,
// method, struct field, interface method, variable, constant or type
// parameter whose type names a type of an internal/ package or an
// unexported type of the module: a Go program outside the module could
// call such a function but not name, build or implement what it takes.
func TestPublicAPINamesOnlyPublicTypes(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	pkgs := loadPublicPackages(t, root)
	if len(pkgs) < 5 {
		t.Fatalf("loaded %d public packages under %s: the walk is broken", len(pkgs), root)
	}
	var leaks []string
	for _, p := range pkgs {
		leaks = append(leaks, apiLeaks(p)...)
	}
	sort.Strings(leaks)
	for _, l := range leaks {
		t.Error(l)
	}
}

// TestAPILeaksFound proves the walk sees each place a type can hide in an
// exported declaration, on a package made for the purpose.
func TestAPILeaksFound(t *testing.T) {
	internal := types.NewPackage(modulePath+"/internal/secret", "secret")
	hidden := types.NewNamed(types.NewTypeName(token.NoPos, internal, "Hidden", nil), types.Typ[types.Int], nil)
	pkg := types.NewPackage(modulePath+"/lib", "lib")
	private := types.NewNamed(types.NewTypeName(token.NoPos, pkg, "private", nil), types.Typ[types.Int], nil)
	pkg.Scope().Insert(private.Obj())
	v := func(name string, typ types.Type) *types.Var { return types.NewVar(token.NoPos, pkg, name, typ) }
	sig := func(params ...types.Type) *types.Signature {
		var vs []*types.Var
		for _, p := range params {
			vs = append(vs, v("", p))
		}
		return types.NewSignatureType(nil, nil, nil, types.NewTuple(vs...), nil, false)
	}
	declare := func(name string, typ types.Type) *types.Named {
		n := types.NewNamed(types.NewTypeName(token.NoPos, pkg, name, nil), nil, nil)
		n.SetUnderlying(typ)
		pkg.Scope().Insert(n.Obj())
		return n
	}
	pkg.Scope().Insert(types.NewFunc(token.NoPos, pkg, "Func", sig(types.NewSlice(hidden))))
	embedded := types.NewNamed(types.NewTypeName(token.NoPos, pkg, "embedded", nil), types.NewStruct([]*types.Var{
		types.NewField(token.NoPos, pkg, "Promoted", hidden, false),
	}, nil), nil)
	declare("Struct", types.NewStruct([]*types.Var{
		types.NewField(token.NoPos, pkg, "Field", types.NewMap(types.Typ[types.String], private), false),
		types.NewField(token.NoPos, pkg, "ok", hidden, false),
		types.NewField(token.NoPos, pkg, "embedded", embedded, true),
	}, nil))
	iface := types.NewInterfaceType([]*types.Func{types.NewFunc(token.NoPos, pkg, "Method", sig(types.NewPointer(hidden)))}, nil)
	iface.Complete()
	declare("Iface", iface)
	withMethod := declare("WithMethod", types.Typ[types.Int])
	withMethod.AddMethod(types.NewFunc(token.NoPos, pkg, "M", types.NewSignatureType(v("r", withMethod), nil, nil, nil, types.NewTuple(v("", private)), false)))
	withMethod.AddMethod(types.NewFunc(token.NoPos, pkg, "m", types.NewSignatureType(v("r", withMethod), nil, nil, nil, types.NewTuple(v("", private)), false)))
	tp := types.NewTypeParam(types.NewTypeName(token.NoPos, pkg, "T", nil), types.NewInterfaceType(nil, []types.Type{hidden}))
	generic := types.NewNamed(types.NewTypeName(token.NoPos, pkg, "Generic", nil), nil, nil)
	generic.SetTypeParams([]*types.TypeParam{tp})
	generic.SetUnderlying(types.NewStruct(nil, nil))
	pkg.Scope().Insert(generic.Obj())
	pkg.Scope().Insert(types.NewVar(token.NoPos, pkg, "Var", types.NewChan(types.SendRecv, hidden)))
	// An alias re-exporting an internal type is a public name for it, but
	// what its declaration exposes is checked.
	open := types.NewNamed(types.NewTypeName(token.NoPos, internal, "Open", nil), types.NewStruct([]*types.Var{
		types.NewField(token.NoPos, internal, "Leak", hidden, false),
	}, nil), nil)
	alias := types.NewAlias(types.NewTypeName(token.NoPos, pkg, "Alias", nil), open)
	pkg.Scope().Insert(alias.Obj())
	pkg.Scope().Insert(types.NewFunc(token.NoPos, pkg, "TakesAlias", sig(types.NewPointer(alias))))
	pkg.Scope().Insert(types.NewFunc(token.NoPos, pkg, "fine", sig(hidden)))

	got := apiLeaks(pkg)
	want := []string{
		"lib.Alias.Leak mentions internal/secret.Hidden",
		"lib.Func mentions internal/secret.Hidden",
		"lib.Generic type parameter T mentions internal/secret.Hidden",
		"lib.Iface.Method mentions internal/secret.Hidden",
		"lib.Struct.Field mentions unexported lib.private",
		"lib.Struct.Promoted mentions internal/secret.Hidden",
		"lib.Var mentions internal/secret.Hidden",
		"lib.WithMethod.M mentions unexported lib.private",
	}
	sort.Strings(got)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("leaks found:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// isPublic reports whether a module package is part of the library API:
// not the command, not internal, not test data or examples.
func isPublic(path string) bool {
	rel, ok := strings.CutPrefix(path, modulePath)
	if !ok {
		return false
	}
	for _, part := range strings.Split(strings.TrimPrefix(rel, "/"), "/") {
		switch part {
		case "cmd", "internal", "testdata", "examples":
			return false
		}
	}
	return true
}

// loadPublicPackages type-checks the public packages from the export data
// the go command compiles for them: standard library only, and what the
// compiler sees, so no source parsing of the module's dependencies.
func loadPublicPackages(t *testing.T, root string) []*types.Package {
	t.Helper()
	cmd := exec.Command(testenv.RequireTool(t, "go"), "list", "-export", "-deps", "-json=ImportPath,Export", "./...")
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -export: %v\n%s", err, stderr.Bytes())
	}
	exports := map[string]string{}
	var public []string
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p struct{ ImportPath, Export string }
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		exports[p.ImportPath] = p.Export
		if isPublic(p.ImportPath) {
			public = append(public, p.ImportPath)
		}
	}
	imp := importer.ForCompiler(token.NewFileSet(), "gc", func(path string) (io.ReadCloser, error) {
		f, ok := exports[path]
		if !ok || f == "" {
			return nil, fmt.Errorf("no export data for %s", path)
		}
		return os.Open(f)
	})
	var pkgs []*types.Package
	for _, path := range public {
		p, err := imp.Import(path)
		if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// apiLeaks lists where pkg's exported declarations name a type a program
// outside the module cannot name.
func apiLeaks(pkg *types.Package) []string {
	var out []string
	report := func(where string, typ types.Type) {
		for _, bad := range hiddenTypes(pkg, typ) {
			out = append(out, fmt.Sprintf("%s.%s mentions %s", pkg.Name(), where, bad))
		}
	}
	sc := pkg.Scope()
	for _, name := range sc.Names() {
		obj := sc.Lookup(name)
		if !obj.Exported() {
			continue
		}
		tn, isType := obj.(*types.TypeName)
		if !isType {
			report(name, obj.Type())
			continue
		}
		if tn.IsAlias() {
			// An exported alias is how a public package gives an
			// internal type a name a program can write (rootfs.LimitError):
			// what that type's declaration exposes is exposed here.
			target, ok := types.Unalias(tn.Type()).(*types.Named)
			if !ok {
				report(name, types.Unalias(tn.Type()))
			} else if p := target.Obj().Pkg(); p != nil && strings.HasPrefix(p.Path(), modulePath) && (!isPublic(p.Path()) || !target.Obj().Exported()) {
				checkNamed(name, target, report)
			}
			continue
		}
		if named, ok := tn.Type().(*types.Named); ok {
			checkNamed(name, named, report)
		}
	}
	return out
}

// checkNamed reports what the declaration of named exposes under name:
// its type parameters, exported fields or interface methods, and the
// exported methods of its pointer's method set (promoted ones too).
func checkNamed(name string, named *types.Named, report func(string, types.Type)) {
	for i := range named.TypeParams().Len() {
		tp := named.TypeParams().At(i)
		report(name+" type parameter "+tp.Obj().Name(), tp.Constraint())
	}
	switch u := named.Underlying().(type) {
	case *types.Struct:
		structFields(name, u, report)
	case *types.Interface:
		for i := range u.NumMethods() {
			if m := u.Method(i); m.Exported() {
				report(name+"."+m.Name(), m.Type())
			}
		}
		return
	default:
		report(name, u)
	}
	ms := types.NewMethodSet(types.NewPointer(named))
	for i := range ms.Len() {
		if m := ms.At(i).Obj(); m.Exported() {
			report(name+"."+m.Name(), m.Type())
		}
	}
}

// structFields reports the exported fields of s, with those an embedded
// unexported struct promotes: a program reads and sets them as its own.
func structFields(name string, s *types.Struct, report func(string, types.Type)) {
	for i := range s.NumFields() {
		f := s.Field(i)
		if f.Exported() {
			report(name+"."+f.Name(), f.Type())
			continue
		}
		if !f.Embedded() {
			continue
		}
		t := f.Type()
		if p, ok := t.(*types.Pointer); ok {
			t = p.Elem()
		}
		if inner, ok := t.Underlying().(*types.Struct); ok {
			structFields(name, inner, report)
		}
	}
}

// hiddenTypes lists the types typ names (deeply, but not through another
// named type, whose own declaration is checked where it is declared) that
// are internal to the module or unexported, other than pkg's own named
// types met on the way.
func hiddenTypes(pkg *types.Package, typ types.Type) []string {
	var out []string
	seen := map[types.Type]bool{}
	var visit func(types.Type)
	visitTuple := func(tu *types.Tuple) {
		for i := range tu.Len() {
			visit(tu.At(i).Type())
		}
	}
	visit = func(typ types.Type) {
		if typ == nil || seen[typ] {
			return
		}
		seen[typ] = true
		switch t := typ.(type) {
		case *types.Alias:
			// An exported alias of a public package is a name a program
			// can write, whatever it stands for.
			if obj := t.Obj(); obj.Pkg() != nil && isPublic(obj.Pkg().Path()) && obj.Exported() {
				for i := range t.TypeArgs().Len() {
					visit(t.TypeArgs().At(i))
				}
				return
			}
			visit(types.Unalias(t))
		case *types.Named:
			obj := t.Obj()
			if obj.Pkg() != nil && strings.HasPrefix(obj.Pkg().Path(), modulePath) {
				rel := strings.TrimPrefix(strings.TrimPrefix(obj.Pkg().Path(), modulePath), "/")
				switch {
				case !isPublic(obj.Pkg().Path()):
					out = append(out, rel+"."+obj.Name())
				case !obj.Exported():
					out = append(out, "unexported "+obj.Pkg().Name()+"."+obj.Name())
				}
			}
			for i := range t.TypeArgs().Len() {
				visit(t.TypeArgs().At(i))
			}
		case *types.Pointer:
			visit(t.Elem())
		case *types.Slice:
			visit(t.Elem())
		case *types.Array:
			visit(t.Elem())
		case *types.Chan:
			visit(t.Elem())
		case *types.Map:
			visit(t.Key())
			visit(t.Elem())
		case *types.Signature:
			for i := range t.TypeParams().Len() {
				visit(t.TypeParams().At(i).Constraint())
			}
			visitTuple(t.Params())
			visitTuple(t.Results())
		case *types.Struct:
			for i := range t.NumFields() {
				if f := t.Field(i); f.Exported() || f.Embedded() {
					visit(f.Type())
				}
			}
		case *types.Interface:
			for i := range t.NumEmbeddeds() {
				visit(t.EmbeddedType(i))
			}
			for i := range t.NumExplicitMethods() {
				visit(t.ExplicitMethod(i).Type())
			}
		case *types.Union:
			for i := range t.Len() {
				visit(t.Term(i).Type())
			}
		case *types.TypeParam:
			// Declared by the function or type being checked; its
			// constraint is visited where it is declared.
		}
	}
	visit(typ)
	return out
}
