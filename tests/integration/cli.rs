//! The `pulmo` binary as a user runs it: version line, libtorch smoke path, and a binary
//! that finds libtorch by itself (no `LD_LIBRARY_PATH`).

use std::process::Command;

fn pulmo() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pulmo"));
    cmd.env_remove("LD_LIBRARY_PATH").env_remove("PULMO_LOG");
    cmd
}

#[test]
fn version_names_crate_git_revision_and_libtorch_2_11() {
    let out = pulmo().arg("--version").output().unwrap();
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).unwrap();
    assert!(
        line.starts_with(&format!("pulmo {} (git ", env!("CARGO_PKG_VERSION"))),
        "{line}"
    );
    assert!(line.contains("libtorch 2.11.0"), "{line}");
}

#[test]
fn selftest_runs_the_smoke_model_on_cpu() {
    let out = pulmo()
        .args(["selftest", "--device", "cpu"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("libtorch ok on cpu"), "{stdout}");
}

#[test]
fn selftest_with_a_bad_model_fails_naming_the_file() {
    let dir = std::env::temp_dir().join(format!("pulmo-bad-model-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("not-a-model.pt");
    std::fs::write(&model, b"this is not a TorchScript archive").unwrap();
    let out = pulmo()
        .args(["selftest", "--device", "cpu", "--model"])
        .arg(&model)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("could not load TorchScript model"),
        "{stderr}"
    );
    assert!(stderr.contains("not-a-model.pt"), "{stderr}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn unknown_device_is_refused_with_the_allowed_values() {
    let out = pulmo()
        .args(["selftest", "--device", "tpu"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("expected auto, cpu, cuda or cuda:N"),
        "{stderr}"
    );
}

#[test]
fn binary_resolves_libtorch_without_ld_library_path() {
    let out = Command::new("ldd")
        .arg(env!("CARGO_BIN_EXE_pulmo"))
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("ldd must be installed");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("not found"), "{text}");
    let line = text
        .lines()
        .find(|l| l.contains("libtorch_cpu.so"))
        .expect("links libtorch_cpu");
    assert!(line.contains("/torch/lib/libtorch_cpu.so"), "{line}");
}
