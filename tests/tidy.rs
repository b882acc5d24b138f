//! Tidy: the architecture invariants of ARCHITECTURE.md, checked against the Cargo manifests.

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

/// Names of a manifest's normal dependencies (not dev or build).
fn dependencies(manifest: &toml::Table) -> Vec<String> {
    manifest
        .get("dependencies")
        .and_then(toml::Value::as_table)
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default()
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
