//! The workspace's dependency rule, from `cargo metadata`: libtorch (`tch`, `torch-sys`) is
//! reachable only through `pulmo-inference`, and the library crates that do not need it
//! build and test without it (their normal and dev dependencies never reach it).

use std::collections::{BTreeSet, HashMap};
use std::process::Command;

use serde_json::Value;

use crate::common::{repo, succeeds};

/// The platform this builds for, from `rustc -vV`.
fn host() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let out = succeeds(Command::new(rustc).arg("-vV"));
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .unwrap_or_else(|| panic!("no host line in rustc -vV: {text}"))
        .to_owned()
}

/// The resolved graph on this platform: package name -> names of its dependencies of the
/// given kinds (`None` is a normal dependency, `"dev"` a dev-dependency, `"build"` a build
/// dependency). Offline and for the host only: a build downloads the host's packages, and the
/// graph of every platform would need the others' (android_system_properties...) from the
/// network, which tests do not use.
fn graph(kinds: &[Option<&str>]) -> HashMap<String, Vec<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = succeeds(
        Command::new(cargo)
            .args(["metadata", "--format-version", "1", "--locked", "--offline"])
            .args(["--filter-platform", &host()])
            .current_dir(repo("")),
    );
    let metadata: Value = serde_json::from_slice(&out.stdout).unwrap();
    let name_of: HashMap<&str, &str> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let mut graph = HashMap::new();
    for node in metadata["resolve"]["nodes"].as_array().unwrap() {
        let deps = node["deps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| {
                d["dep_kinds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|k| kinds.contains(&k["kind"].as_str()))
            })
            .map(|d| name_of[d["pkg"].as_str().unwrap()].to_owned())
            .collect();
        graph.insert(name_of[node["id"].as_str().unwrap()].to_owned(), deps);
    }
    graph
}

/// Whether `from` reaches `to` in `graph`.
fn reaches(graph: &HashMap<String, Vec<String>>, from: &str, to: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from.to_owned()];
    while let Some(name) = stack.pop() {
        if name == to {
            return true;
        }
        if seen.insert(name.clone()) {
            stack.extend(graph.get(&name).into_iter().flatten().cloned());
        }
    }
    false
}

const MEMBERS: [&str; 9] = [
    "pulmo",
    "pulmo-backend",
    "pulmo-core",
    "pulmo-dicom",
    "pulmo-dicomweb",
    "pulmo-dimse",
    "pulmo-inference",
    "pulmo-metrics",
    "pulmo-service",
];

#[test]
fn tch_is_reachable_only_through_the_inference_crate() {
    let normal = graph(&[None]);
    let with_tch: Vec<&str> = MEMBERS
        .into_iter()
        .filter(|m| reaches(&normal, m, "tch"))
        .collect();
    assert_eq!(with_tch, ["pulmo", "pulmo-inference"]);
    let direct: Vec<&str> = MEMBERS
        .into_iter()
        .filter(|m| normal[*m].iter().any(|d| d == "tch" || d == "torch-sys"))
        .collect();
    assert_eq!(
        direct,
        ["pulmo-inference"],
        "only it names tch or torch-sys"
    );
}

#[test]
fn the_crates_without_libtorch_test_without_it() {
    // Their tests build with their normal and dev dependencies; a dev-dependency on a crate
    // that reaches torch-sys would link libtorch into their test binaries.
    let all = graph(&[None, Some("dev")]);
    let normal = graph(&[None]);
    for member in [
        "pulmo-backend",
        "pulmo-core",
        "pulmo-dicom",
        "pulmo-dicomweb",
        "pulmo-dimse",
        "pulmo-metrics",
        "pulmo-service",
    ] {
        for dep in &all[member] {
            assert!(
                !reaches(&normal, dep, "torch-sys"),
                "{member}'s tests would link libtorch through {dep}"
            );
        }
    }
}
