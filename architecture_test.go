package main

import (
	"go/build"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const modulePath = "github.com/smtpout/smtpout"

// archRow is one row of ARCHITECTURE.md's package table.
type archRow struct {
	pkg     string   // "." for main; "testsupport/..." and "test/" cover every package below
	imports []string // our packages its non-test files import; nil with check false
	check   bool     // false when the row says "everything"
}

// covers reports whether the row is the one for package dir (relative to the module).
func (r archRow) covers(dir string) bool {
	if p, ok := strings.CutSuffix(r.pkg, "/..."); ok {
		return strings.HasPrefix(dir, p+"/")
	}
	if p, ok := strings.CutSuffix(r.pkg, "/"); ok {
		return dir == p || strings.HasPrefix(dir, p+"/")
	}
	return dir == r.pkg
}

var firstQuoted = regexp.MustCompile("^`([^`]+)`")

// archTable reads the "Packages" table of ARCHITECTURE.md.
func archTable(t *testing.T) []archRow {
	t.Helper()
	b, err := os.ReadFile("ARCHITECTURE.md")
	if err != nil {
		t.Fatal(err)
	}
	var rows []archRow
	in := false
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case line == "| package | owns | imports (ours) |":
			in = true
		case !strings.HasPrefix(line, "|"):
			in = false
		case in && !strings.HasPrefix(line, "|---"):
			cells := strings.Split(strings.Trim(line, "|"), " | ")
			m := firstQuoted.FindStringSubmatch(strings.TrimSpace(cells[0]))
			if m == nil {
				t.Fatalf("ARCHITECTURE.md: a package row that does not start with a `package`: %s", line)
			}
			r := archRow{pkg: m[1], check: true}
			if r.pkg == "main" {
				r.pkg = "."
			}
			imp := regexp.MustCompile(`\([^)]*\)`).ReplaceAllString(cells[len(cells)-1], "")
			switch strings.TrimSpace(imp) {
			case "everything":
				r.check = false
			case "none":
			default:
				for _, p := range strings.Split(imp, ",") {
					r.imports = append(r.imports, strings.TrimSpace(p))
				}
			}
			rows = append(rows, r)
		}
	}
	if len(rows) < 10 {
		t.Fatalf("ARCHITECTURE.md: found %d package rows; is the header still \"| package | owns | imports (ours) |\"?", len(rows))
	}
	return rows
}

// modulePackages returns every package of the module (not of nested modules) with the
// imports of its non-test files, cgo files included.
func modulePackages(t *testing.T) map[string][]string {
	t.Helper()
	ctx := build.Default
	ctx.CgoEnabled = true
	pkgs := make(map[string][]string)
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		if path != "." {
			if strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
				return filepath.SkipDir // a nested module (test/bench/storecmp)
			}
		}
		p, err := ctx.ImportDir(path, 0)
		if err != nil {
			if _, ok := err.(*build.NoGoError); ok {
				return nil
			}
			return err
		}
		pkgs[filepath.ToSlash(path)] = p.Imports
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return pkgs
}

// TestArchitectureTable keeps ARCHITECTURE.md's package table true: every package has a
// row, and the packages a row says it imports are exactly the module's packages its non-test
// files import. It also checks the rules under the table: only main imports "C" and
// fluent-bit-go, no library package imports a logger, and nothing shipped imports
// testsupport/.
func TestArchitectureTable(t *testing.T) {
	rows := archTable(t)
	pkgs := modulePackages(t)
	if len(pkgs) < 15 {
		t.Fatalf("found %d packages in the module", len(pkgs))
	}
	ours := make(map[*archRow][]string) // row -> our packages its packages import
	for dir, imports := range pkgs {
		var row *archRow
		for i := range rows {
			if rows[i].covers(dir) {
				if row != nil {
					t.Errorf("package %s has two rows in ARCHITECTURE.md: %s and %s", dir, row.pkg, rows[i].pkg)
				}
				row = &rows[i]
			}
		}
		if row == nil {
			t.Errorf("package %s has no row in ARCHITECTURE.md's package table", dir)
			continue
		}
		shipped := !strings.HasPrefix(dir, "test")
		for _, imp := range imports {
			rel, isOurs := strings.CutPrefix(imp, modulePath+"/")
			switch {
			case isOurs:
				if !slices.Contains(ours[row], rel) {
					ours[row] = append(ours[row], rel)
				}
				if shipped && strings.HasPrefix(rel, "testsupport/") {
					t.Errorf("package %s imports %s: nothing shipped may import testsupport/", dir, rel)
				}
			case imp == "C" || strings.HasPrefix(imp, "github.com/fluent/fluent-bit-go"):
				if dir != "." {
					t.Errorf("package %s imports %s: only main may", dir, imp)
				}
			case (imp == "log" || imp == "log/slog") && shipped && dir != "." && dir != "cmd/smtpout":
				t.Errorf("package %s imports %s: library packages do not log (internal/pipeline logs through the Logger main gives it)", dir, imp)
			}
		}
	}
	for i := range rows {
		r := &rows[i]
		if !r.check {
			continue
		}
		got := ours[r]
		slices.Sort(got)
		want := slices.Clone(r.imports)
		slices.Sort(want)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("ARCHITECTURE.md says %s imports %v; its non-test files import (-table +code):\n%s", r.pkg, r.imports, diff)
		}
	}
}
