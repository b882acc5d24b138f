//! Tidy: the architecture invariants of ARCHITECTURE.md, checked against the Cargo manifests,
//! and that every case of the storage conformance suite runs on both backends.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every crate under `crates/`: name → parsed manifest.
fn manifests() -> BTreeMap<String, toml::Table> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(root().join("crates")).expect("crates/") {
        let dir = entry.expect("entry").path();
        let text = std::fs::read_to_string(dir.join("Cargo.toml")).expect("Cargo.toml");
        let manifest: toml::Table = toml::from_str(&text).expect("valid manifest");
        let folder = dir
            .file_name()
            .and_then(|f| f.to_str())
            .expect("folder name")
            .to_owned();
        out.insert(folder, manifest);
    }
    out
}

/// A manifest's normal dependencies (not dev or build), target-specific ones included: (key, spec).
fn normal_dependency_specs(manifest: &toml::Table) -> Vec<(String, toml::Value)> {
    let mut tables = vec![manifest.get("dependencies")];
    if let Some(targets) = manifest.get("target").and_then(toml::Value::as_table) {
        tables.extend(targets.values().map(|t| t.get("dependencies")));
    }
    tables
        .into_iter()
        .flatten()
        .filter_map(toml::Value::as_table)
        .flat_map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())))
        .collect()
}

/// Names of the packages a manifest's normal dependencies are (renamed ones by their `package`).
fn dependencies(manifest: &toml::Table) -> Vec<String> {
    normal_dependency_specs(manifest)
        .into_iter()
        .map(|(key, spec)| {
            spec.get("package")
                .and_then(toml::Value::as_str)
                .map_or(key, str::to_owned)
        })
        .collect()
}

#[test]
fn crates_depend_only_on_what_their_layer_allows() {
    // (crate, dependencies it must never have)
    let forbidden: &[(&str, &[&str])] = &[
        (
            "patron-domain",
            &[
                "tonic",
                "prost",
                "prost-types",
                "sqlx",
                "tokio",
                "patron-store",
                "patron-proto",
                "patron-grpc",
            ],
        ),
        (
            "patron-store",
            &["tonic", "prost", "sqlx", "patron-proto", "patron-grpc"],
        ),
        (
            "patron-proto",
            &["sqlx", "patron-domain", "patron-store", "patron-grpc"],
        ),
        (
            "patron-store-sqlite",
            &[
                "tonic",
                "prost",
                "patron-proto",
                "patron-grpc",
                "patron-store-postgres",
            ],
        ),
        (
            "patron-store-postgres",
            &[
                "tonic",
                "prost",
                "patron-proto",
                "patron-grpc",
                "patron-store-sqlite",
            ],
        ),
        (
            "patron-grpc",
            &["sqlx", "patron-store-sqlite", "patron-store-postgres"],
        ),
        (
            "patron-customers",
            &["sqlx", "patron-store-sqlite", "patron-store-postgres"],
        ),
    ];
    let manifests = manifests();
    for (krate, banned) in forbidden {
        let manifest = manifests
            .get(*krate)
            .unwrap_or_else(|| panic!("{krate} is missing"));
        let deps = dependencies(manifest);
        for b in *banned {
            assert!(
                !deps.iter().any(|d| d == b),
                "Architecture Invariant broken: {krate} depends on {b}"
            );
        }
    }
}

#[test]
fn every_crate_follows_workspace_conventions() {
    for (folder, manifest) in manifests() {
        let package = manifest
            .get("package")
            .and_then(toml::Value::as_table)
            .expect("[package]");
        let name = package
            .get("name")
            .and_then(toml::Value::as_str)
            .expect("name");
        assert_eq!(name, folder, "a crate's folder is named like the crate");
        for key in ["version", "edition", "publish"] {
            let inherited = package
                .get(key)
                .and_then(toml::Value::as_table)
                .and_then(|t| t.get("workspace"))
                .and_then(toml::Value::as_bool);
            assert_eq!(inherited, Some(true), "{name}: {key}.workspace = true");
        }
        let lints = manifest
            .get("lints")
            .and_then(toml::Value::as_table)
            .and_then(|t| t.get("workspace"));
        assert_eq!(
            lints.and_then(toml::Value::as_bool),
            Some(true),
            "{name}: [lints] workspace = true"
        );
        for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
            let Some(deps) = manifest.get(section).and_then(toml::Value::as_table) else {
                continue;
            };
            for (dep, spec) in deps {
                let from_workspace = spec
                    .as_table()
                    .and_then(|t| t.get("workspace"))
                    .and_then(toml::Value::as_bool);
                assert_eq!(
                    from_workspace,
                    Some(true),
                    "{name}: {section}.{dep} must use workspace = true (versions live once, in the root manifest)"
                );
            }
        }
    }
}

#[test]
fn the_root_manifest_is_virtual() {
    let text = std::fs::read_to_string(root().join("Cargo.toml")).expect("root manifest");
    let manifest: toml::Table = toml::from_str(&text).expect("valid");
    assert!(
        manifest.get("package").is_none(),
        "the root manifest has no [package]"
    );
    assert!(manifest.get("workspace").is_some());
}

/// The container image ships the build the scale benchmark measures: the `production` profile,
/// the release build linked whole (docs/benchmarks.md, "The production build").
#[test]
fn the_image_ships_the_profile_the_scale_benchmark_measures() {
    let text = std::fs::read_to_string(root().join("Cargo.toml")).expect("root manifest");
    let manifest: toml::Table = toml::from_str(&text).expect("valid");
    let production = manifest
        .get("profile")
        .and_then(|p| p.get("production"))
        .and_then(toml::Value::as_table)
        .expect("[profile.production] in the root manifest");
    let setting = |key: &str| production.get(key).map(ToString::to_string);
    assert_eq!(setting("inherits").as_deref(), Some("\"release\""));
    assert_eq!(setting("lto").as_deref(), Some("\"fat\""));
    assert_eq!(setting("codegen-units").as_deref(), Some("1"));

    let dockerfile =
        std::fs::read_to_string(root().join("deploy/Dockerfile")).expect("deploy/Dockerfile");
    assert!(
        dockerfile.contains("cargo build --profile production ")
            && dockerfile.contains("target/production/patron /out/patron"),
        "deploy/Dockerfile builds and copies the production binary"
    );
    let scale = std::fs::read_to_string(root().join("scripts/bench-scale.sh"))
        .expect("scripts/bench-scale.sh");
    assert!(
        scale.contains("PROFILE=${BENCH_PROFILE:-production}"),
        "scripts/bench-scale.sh measures the production build unless told otherwise"
    );

    // A benchmark's baseline revision may predate the profile: scripts/cargo-profile.sh passes
    // it the definition as --config, which must say what the manifest says.
    let helper = std::fs::read_to_string(root().join("scripts/cargo-profile.sh"))
        .expect("scripts/cargo-profile.sh");
    for (key, value) in production {
        let config = format!("'profile.production.{key}={value}'");
        assert!(
            helper.contains(&config),
            "scripts/cargo-profile.sh --args defines the production profile as the root manifest \
             does: {config} is missing"
        );
    }
}

#[test]
fn every_benchmark_builds_through_cargo_profile() {
    // One mapping from BENCH_PROFILE to cargo's profile, so every script measures whichever build
    // it is told to (release, production, debug for the smoke run) and none hard-codes one.
    let mut builders = 0;
    for entry in std::fs::read_dir(root().join("scripts")).expect("scripts/") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("file name")
            .to_string_lossy()
            .into_owned();
        if !name.ends_with(".sh") {
            continue;
        }
        let script = std::fs::read_to_string(&path).expect("script");
        for line in script
            .lines()
            .filter(|l| l.contains("cargo build") && !l.trim_start().starts_with('#'))
        {
            assert!(
                line.contains("--profile \"$(scripts/cargo-profile.sh")
                    || line.contains("--profile \"$CARGO_PROFILE\"")
                    || line.contains("\"${args[@]}\""),
                "{name}: `{}` builds without scripts/cargo-profile.sh",
                line.trim()
            );
            builders += 1;
        }
        if script.contains("CARGO_PROFILE") {
            assert!(
                script.contains("CARGO_PROFILE=$(scripts/cargo-profile.sh \"$PROFILE\")"),
                "{name} uses $CARGO_PROFILE without setting it from scripts/cargo-profile.sh"
            );
        }
        if script.contains("\"${args[@]}\"") {
            assert!(
                script
                    .contains("mapfile -t args < <(scripts/cargo-profile.sh \"$PROFILE\" --args)"),
                "{name} uses args without setting it from scripts/cargo-profile.sh --args"
            );
        }
        // Another revision's crates built in target/ take this commit's artifact names, and a
        // later build of this commit can link them as fresh: only scripts/build-baseline.sh
        // builds another checkout, and in its own target directory.
        if name != "build-baseline.sh" {
            assert!(
                !script.lines().any(|l| !l.trim_start().starts_with('#')
                    && (l.contains("--manifest-path") || l.contains("git worktree"))),
                "{name} builds another checkout itself; use scripts/build-baseline.sh"
            );
        }
    }
    assert!(
        builders >= 14,
        "only {builders} cargo builds found in scripts/*.sh"
    );
    let baseline = std::fs::read_to_string(root().join("scripts/build-baseline.sh"))
        .expect("scripts/build-baseline.sh");
    assert!(
        baseline.contains("TARGET=\"$(pwd)/target/baseline-$SHA\"")
            && baseline.contains("CARGO_TARGET_DIR=\"$TARGET\" cargo build"),
        "scripts/build-baseline.sh builds in a target directory of its own"
    );
}

/// Service crates: each serves one gRPC service.
const SERVICE_CRATES: &[&str] = &[
    "patron-customers",
    "patron-scoring",
    "patron-segmentation",
    "patron-loyalty",
];

#[test]
fn service_crates_depend_on_no_other_service_crate_but_the_listed_ones() {
    // (crate, service crate it may depend on, why). Anything else is a new edge between services:
    // think twice, and if it must be, add it here with its reason (and to ARCHITECTURE.md). What
    // several services read (the customer index, models, tier policy, profiles) is in
    // `patron-views`, not in a service.
    let allowed: &[(&str, &str, &str)] = &[(
        "patron-loyalty",
        "patron-segmentation",
        "target and required segments; loyalty facts reach segment rules (LoyaltyFacts)",
    )];
    let manifests = manifests();
    for krate in SERVICE_CRATES {
        let manifest = manifests
            .get(*krate)
            .unwrap_or_else(|| panic!("{krate} is missing"));
        for dep in dependencies(manifest) {
            if !SERVICE_CRATES.contains(&dep.as_str()) {
                continue;
            }
            assert!(
                allowed.iter().any(|(c, d, _)| c == krate && *d == dep),
                "Architecture Invariant broken: service crate {krate} depends on service crate \
                 {dep}, which is not among the allowed edges in tests/tidy.rs"
            );
        }
    }
}

/// Every package `krate` depends on (normal dependencies), directly or through other crates of
/// this workspace: a workspace crate's own dependencies are followed, an external crate's are not.
fn dependency_closure(manifests: &BTreeMap<String, toml::Table>, krate: &str) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    let mut todo = vec![krate.to_owned()];
    while let Some(next) = todo.pop() {
        let Some(manifest) = manifests.get(&next) else {
            continue;
        };
        for dep in dependencies(manifest) {
            if !seen.contains(&dep) {
                seen.push(dep.clone());
                todo.push(dep);
            }
        }
    }
    seen.sort();
    seen
}

#[test]
fn the_views_know_no_grpc_and_no_service() {
    // The views every service reads are plain Rust over the domain and the store: no gRPC, no
    // proto, no service, not even through another Patron crate (the feed's `FeedView` trait is
    // in `patron-store` for this reason).
    let manifests = manifests();
    let closure = dependency_closure(&manifests, "patron-views");
    let banned = [
        "tonic",
        "prost",
        "prost-types",
        "patron-proto",
        "patron-grpc",
    ];
    let through: Vec<&String> = closure
        .iter()
        .filter(|d| d.starts_with("patron-"))
        .collect();
    for dep in &closure {
        assert!(
            !banned.contains(&dep.as_str()) && !SERVICE_CRATES.contains(&dep.as_str()),
            "Architecture Invariant broken: patron-views depends on {dep} (directly or through \
             one of {through:?}); the views know no gRPC, proto or service"
        );
    }
}

#[test]
fn only_backends_and_the_bench_name_a_database_driver() {
    let drivers = [
        "sqlx",
        "sqlx-core",
        "sqlx-sqlite",
        "sqlx-postgres",
        "rusqlite",
        "libsqlite3-sys",
        "postgres",
        "tokio-postgres",
        "diesel",
        "sea-orm",
    ];
    let may = [
        "patron-store-sqlite",
        "patron-store-postgres",
        // The SQL both backends share, generic over the database: sqlx without a driver
        // feature (`the_shared_sql_crate_names_no_database_and_only_backends_use_it`).
        "patron-store-sql",
        // The storage baselines of the benchmarks (`ingest-load raw`, `redeem-raw`).
        "patron-bench",
    ];
    for (krate, manifest) in manifests() {
        if may.contains(&krate.as_str()) {
            continue;
        }
        for dep in dependencies(&manifest) {
            assert!(
                !drivers.contains(&dep.as_str()),
                "Architecture Invariant broken: {krate} depends on the database driver {dep}; \
                 only {may:?} may (tests may, as a dev-dependency)"
            );
        }
    }
}

#[test]
fn the_shared_sql_crate_names_no_database_and_only_backends_use_it() {
    let manifests = manifests();
    let shared = manifests
        .get("patron-store-sql")
        .expect("patron-store-sql is missing");
    for (key, spec) in normal_dependency_specs(shared) {
        let features: Vec<&str> = spec
            .get("features")
            .and_then(toml::Value::as_array)
            .map(|f| f.iter().filter_map(toml::Value::as_str).collect())
            .unwrap_or_default();
        for f in features {
            assert!(
                !["sqlite", "postgres", "mysql", "any"].contains(&f)
                    && !f.starts_with("sqlite-")
                    && !f.starts_with("postgres-"),
                "Architecture Invariant broken: patron-store-sql turns on the driver feature \
                 {f:?} of {key}; it is generic over the database, each backend brings its driver"
            );
        }
        assert!(
            ![
                "patron-store-sqlite",
                "patron-store-postgres",
                "patron-proto",
                "patron-grpc"
            ]
            .contains(&key.as_str()),
            "Architecture Invariant broken: patron-store-sql depends on {key}"
        );
    }
    let backends = ["patron-store-sqlite", "patron-store-postgres"];
    for (krate, manifest) in &manifests {
        if backends.contains(&krate.as_str()) {
            continue;
        }
        assert!(
            !dependencies(manifest)
                .iter()
                .any(|d| d == "patron-store-sql"),
            "Architecture Invariant broken: {krate} depends on patron-store-sql; only the \
             backends {backends:?} may"
        );
    }
}

#[test]
fn test_support_features_are_turned_on_by_dev_dependencies_only() {
    // (crate, feature compiled for tests only)
    let test_only: &[(&str, &str)] = &[
        ("patron-store", "conformance"),
        ("patron-store-sqlite", "testing"),
        ("patron-store-postgres", "testing"),
    ];
    for (krate, manifest) in manifests() {
        for (dep, spec) in normal_dependency_specs(&manifest) {
            let features: Vec<&str> = spec
                .as_table()
                .and_then(|t| t.get("features"))
                .and_then(toml::Value::as_array)
                .map(|a| a.iter().filter_map(toml::Value::as_str).collect())
                .unwrap_or_default();
            for (owner, feature) in test_only {
                assert!(
                    !(dep == *owner && features.contains(feature)),
                    "{krate} turns on {owner}'s `{feature}` feature in a normal dependency: it is \
                     for tests only (a dev-dependency), never in the production build"
                );
            }
        }
        let own = manifest
            .get("features")
            .and_then(toml::Value::as_table)
            .cloned()
            .unwrap_or_default();
        for (name, enables) in own {
            let test_feature = test_only.iter().any(|(c, f)| *c == krate && *f == name);
            for enabled in enables.as_array().into_iter().flatten() {
                let enabled = enabled.as_str().unwrap_or_default();
                for (owner, feature) in test_only {
                    assert!(
                        test_feature || enabled != format!("{owner}/{feature}"),
                        "{krate}'s feature `{name}` turns on the test-only `{owner}/{feature}`"
                    );
                }
            }
        }
    }
}

/// The files of the conformance suite: `crates/patron-store/src/conformance/*.rs`, sorted.
fn conformance_files() -> Vec<(String, String)> {
    let dir = root().join("crates/patron-store/src/conformance");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("source");
            let name = p.file_name().and_then(|f| f.to_str()).expect("name");
            (name.to_owned(), text)
        })
        .collect();
    out.sort();
    out
}

/// Every top-level `pub async fn` of `text` (one starting a line): (name, parameter list as
/// written, on one line).
fn pub_async_fns(text: &str) -> Vec<(String, String)> {
    const START: &str = "\npub async fn ";
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(START) {
        rest = &rest[at + START.len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let params = &rest[name.len()..];
        let mut depth = 0;
        let mut end = params.len();
        for (i, c) in params.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let list = params.get(1..end).unwrap_or_default();
        out.push((name, list.split_whitespace().collect::<Vec<_>>().join(" ")));
    }
    out
}

/// The case list of `conformance_tests!`: the identifiers of its `@all` arm.
fn macro_cases(module: &str) -> Vec<String> {
    let start = module
        .find("(@all $attrs:tt $make:expr)")
        .expect("conformance_tests! has an `@all` arm");
    let arm = &module[start..];
    let list_start = arm.find("$make;").expect("the @all arm lists its cases") + "$make;".len();
    let list_end = arm[list_start..].find(");").expect("the case list ends") + list_start;
    arm[list_start..list_end]
        .lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .flat_map(|l| l.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_conformance_case_runs_on_both_backends() {
    // `pub async fn`s of the suite that are not cases: helpers of the backends' migration tests.
    let helpers = ["engagement_days_were_backfilled"];
    let files = conformance_files();
    let module = &files
        .iter()
        .find(|(name, _)| name == "mod.rs")
        .expect("conformance/mod.rs")
        .1;
    let listed = macro_cases(module);
    let mut cases = Vec::new();
    for (file, text) in &files {
        for (name, params) in pub_async_fns(text) {
            // A case takes the store and nothing else.
            let is_case = !params.trim_end_matches(',').contains(',')
                && (params.starts_with("store: &impl Store")
                    || params.starts_with("store: &(impl Store"));
            if helpers.contains(&name.as_str()) {
                assert!(
                    !is_case,
                    "conformance/{file}: {name} takes only the store: a case, not a helper; \
                     take it off the helper list of tests/tidy.rs and into conformance_tests!"
                );
                continue;
            }
            assert!(
                is_case,
                "conformance/{file}: `pub async fn {name}({params})` is neither a case (which \
                 takes only `store: &impl Store`) nor a helper listed in tests/tidy.rs"
            );
            assert!(
                listed.contains(&name),
                "conformance case {name} (conformance/{file}) is not in the case list of \
                 conformance_tests! (conformance/mod.rs), so no backend runs it: add it there"
            );
            cases.push(name);
        }
    }
    assert!(
        cases.len() > 30,
        "found only {} conformance cases",
        cases.len()
    );
    for name in &listed {
        assert_eq!(
            listed.iter().filter(|n| *n == name).count(),
            1,
            "conformance_tests! lists {name} twice"
        );
        assert!(
            cases.contains(name),
            "conformance_tests! lists {name}, which is no `pub async fn {name}(store: &impl Store)` \
             of the suite"
        );
    }
    for backend in ["patron-store-sqlite", "patron-store-postgres"] {
        let path = root()
            .join("crates")
            .join(backend)
            .join("tests/conformance.rs");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            text.lines().any(|l| l
                .trim_start()
                .starts_with("patron_store::conformance_tests!(")),
            "{backend}/tests/conformance.rs does not run the suite (patron_store::conformance_tests!)"
        );
    }
}

/// Every `.rs` file under `dir`, recursively: (path relative to the repository root, text).
fn rust_sources(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("source");
                let name = path
                    .strip_prefix(root())
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .replace('\\', "/");
                out.push((name, text));
            }
        }
    }
    out.sort();
    out
}

/// ErrorInfo reasons are part of the API, so they are written once: as `patron_grpc::Reason`
/// variants, whose `as_str()` gives the wire string. The only code that makes an `ErrorInfo` is
/// `patron_grpc::error_details`, which takes a `Reason`; no other source (tests aside) builds one
/// from a string.
#[test]
fn error_info_reasons_come_only_from_the_reason_enum() {
    // `ErrorInfo {` is the struct literal (`ErrorInfo { reason: "…", … }`); the others are
    // tonic-types' constructors.
    const BUILDERS: [&str; 4] = [
        "with_error_info(",
        "set_error_info(",
        "ErrorInfo::new(",
        "ErrorInfo {",
    ];
    let mut found: Vec<String> = Vec::new();
    for (path, text) in rust_sources(&root().join("crates")) {
        if path.contains("/tests/") {
            continue;
        }
        // Unit tests compare reasons with the strings clients see; they build none.
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
        for (n, line) in code.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for b in BUILDERS {
                if line.contains(b) {
                    found.push(format!("{path}:{}: {}", n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        found.len() == 1
            && found[0].starts_with("crates/patron-grpc/src/error.rs")
            && found[0].contains("with_error_info(reason.as_str(), ERROR_DOMAIN"),
        "an ErrorInfo is made only by patron_grpc::error_details, from a Reason; found:\n{}",
        found.join("\n")
    );
}
