//! `pulmo serve --dimse-listen` with real DICOM network peers over loopback: dcmtk's
//! `echoscu`, `storescu` (RLE, uncompressed, JPEG lossless, JPEG-LS, deflated) and
//! `storescp` (the PACS that results are pushed back to), and a raw SCU built
//! on dicom-ul for what dcmtk will not send (a corrupt data set, an abort mid-instance,
//! an association held open). Nothing acknowledged is lost across `kill -9`.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use dicom_dictionary_std::tags;
use dicom_ul::pdu::{PDataValue, PDataValueType};
use dicom_ul::{ClientAssociation, ClientAssociationOptions, Pdu};
use pulmo_dimse::command;
use pulmo_dimse::contexts::{CT_IMAGE_STORAGE, EXPLICIT_VR_LE};
use reqwest::StatusCode;

use crate::common::server::*;
use crate::common::{scratch, Scratch};

/// A server with the DIMSE listener on a free loopback port; returns it and the port.
fn start(data: &Path, quiet: f64, extra: &[&str]) -> (Server, u16) {
    let args = [&["--dimse-listen", "127.0.0.1:0"], extra].concat();
    let mut server = Server::start(data, quiet, &args);
    let line = server.next_line();
    let port = line
        .strip_prefix("pulmo DIMSE listening on 127.0.0.1:")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("unexpected DIMSE line {line:?}"));
    (server, port)
}

/// A dcmtk tool aimed at pulmo (called AE `PULMO`), Nagle off as pulmo has it.
fn dcmtk(tool: &str, port: u16, args: &[&str]) -> Output {
    Command::new(tool)
        .env("TCP_NODELAY", "1")
        .args(["-aec", "PULMO"])
        .args(args)
        .args(["127.0.0.1", &port.to_string()])
        .output()
        .unwrap_or_else(|e| panic!("{tool} runs (dcmtk is installed): {e}"))
}

fn storescu(port: u16, args: &[&str], files: &[PathBuf]) -> Output {
    let files: Vec<&str> = files.iter().map(|f| f.to_str().unwrap()).collect();
    let mut command = Command::new("storescu");
    command
        .env("TCP_NODELAY", "1")
        .args(["-aec", "PULMO"])
        .args(args)
        .args(["127.0.0.1", &port.to_string()])
        .args(&files);
    command.output().expect("storescu runs")
}

fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

/// Copies of `files` made by a dcmtk tool and its options (`dcmdrle`: uncompressed;
/// `dcmcjpeg`: JPEG lossless SV1; `dcmcjpls`: JPEG-LS lossless; `dcmconv +td`: deflated).
fn converted(tool: &[&str], files: &[PathBuf], dir: &Path) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    files
        .iter()
        .map(|file| {
            let out = dir.join(file.file_name().unwrap());
            let done = Command::new(tool[0])
                .args(&tool[1..])
                .arg(file)
                .arg(&out)
                .status();
            assert!(done.unwrap().success(), "{tool:?} {}", file.display());
            out
        })
        .collect()
}

fn study_instances(server: &Server, study: &str) -> Option<u64> {
    let (status, body) = server.get_json(&format!("/api/v1/studies/{study}"));
    (status == StatusCode::OK).then(|| body["instances"].as_u64().unwrap())
}

/// Every file in the spool, with its transfer syntax.
fn spooled(data: &Path) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    let mut stack = vec![data.join("spool")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let object = dicom_object::open_file(&path).unwrap();
                let ts = object
                    .meta()
                    .transfer_syntax()
                    .trim_end_matches('\0')
                    .to_owned();
                found.push((path, ts));
            }
        }
    }
    found
}

fn temporaries(data: &Path) -> usize {
    std::fs::read_dir(data.join("tmp")).map_or(0, |d| d.count())
}

#[test]
fn an_echo_and_a_series_sent_by_storescu_become_a_report() {
    let data = scratch("dimse-series");
    let (server, port) = start(&data, 0.5, &[]);
    let echo = dcmtk("echoscu", port, &["-v"]);
    assert!(echo.status.success(), "{}", text(&echo));
    assert!(text(&echo).contains("Received Echo Response (Success)"));
    let (files, study) = sample();
    // The sample is RLE Lossless: storescu proposes it with -xr and sends it as it is.
    let sent = storescu(port, &["-xr"], &files);
    assert!(sent.status.success(), "{}", text(&sent));
    let report = report(&server, &study);
    assert_eq!(report["study_instance_uid"], study.as_str());
    assert!(!report["findings"].as_array().unwrap().is_empty());
    assert_eq!(study_instances(&server, &study), Some(files.len() as u64));
    let spooled = spooled(&data);
    assert_eq!(spooled.len(), files.len());
    assert!(spooled.iter().all(|(_, ts)| ts == "1.2.840.10008.1.2.5"));
    // Each association left an audit record naming the peer, and the store one its study.
    let db = rusqlite::Connection::open(data.join("pulmo.sqlite")).unwrap();
    let audit: Vec<(String, String, Option<String>)> = db
        .prepare("SELECT caller, action, study_uid FROM audit ORDER BY at")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let dimse: Vec<_> = audit.iter().filter(|a| a.0.starts_with("dimse:")).collect();
    assert_eq!(dimse.len(), 2, "{audit:?}");
    assert_eq!(dimse[0].0, "dimse:ECHOSCU@127.0.0.1");
    assert!(dimse[1].1.contains("108 stored, 0 refused"), "{audit:?}");
    assert_eq!(dimse[1].2.as_deref(), Some(study.as_str()));
}

#[test]
fn a_series_in_five_transfer_syntaxes_partly_over_stow_rs_is_stored_as_sent_and_analysed() {
    let data = scratch("dimse-syntaxes");
    let (server, port) = start(&data, 1.0, &[]);
    let (files, study) = sample();
    let work = scratch("dimse-syntaxes-files");
    let plain = converted(&["dcmdrle"], &files[..100], &work.join("plain"));
    let jpeg_ls = converted(&["dcmcjpls"], &plain[..36], &work.join("jpeg-ls"));
    let deflated = converted(&["dcmconv", "+td"], &plain[36..72], &work.join("deflated"));
    let jpeg = converted(&["dcmcjpeg"], &plain[90..100], &work.join("jpeg"));
    for (args, part) in [
        (&["-xt"][..], &jpeg_ls[..]),
        (&["-xd"], &deflated),
        (&[], &plain[72..90]),
        (&["-xs"], &jpeg),
    ] {
        let sent = storescu(port, args, part);
        assert!(sent.status.success(), "{args:?}: {}", text(&sent));
    }
    // The last 8 slices, RLE as they are, come over STOW-RS into the same series.
    let response = stow(
        &server,
        "/dicomweb/studies",
        multipart(&dicom_parts(&files[100..])),
    );
    assert_eq!(response.status(), StatusCode::OK);
    let count = |ts: &str| spooled(&data).iter().filter(|(_, t)| t == ts).count();
    assert_eq!(count("1.2.840.10008.1.2.4.80"), 36, "JPEG-LS lossless");
    assert_eq!(count("1.2.840.10008.1.2.1.99"), 36, "deflated");
    assert_eq!(
        count("1.2.840.10008.1.2.1"),
        18,
        "explicit VR little endian"
    );
    assert_eq!(count("1.2.840.10008.1.2.4.70"), 10, "JPEG lossless SV1");
    assert_eq!(count("1.2.840.10008.1.2.5"), 8, "RLE by STOW-RS");
    report(&server, &study);
    let (_, status) = server.get_json(&format!("/api/v1/studies/{study}"));
    let job = &status["jobs"][0];
    assert_eq!(job["state"], "done", "{status}");
    assert_eq!(
        job["instances"],
        files.len(),
        "every slice decoded: {status}"
    );
}

#[test]
fn the_peers_file_decides_who_may_associate_and_in_which_lane() {
    let data = scratch("dimse-peers");
    let peers = data.join("peers.toml");
    let file = "[[peer]]\nae_title = \"ORTHANC\"\nhost = \"127.0.0.1\"\nlane = \"stat\"\n\n\
                [[peer]]\nae_title = \"FARAWAY\"\nhost = \"192.0.2.7\"\n";
    std::fs::write(&peers, file).unwrap();
    let (server, port) = start(&data, 0.5, &["--dimse-peers", peers.to_str().unwrap()]);
    for (calling, called, reason) in [
        ("STRANGER", "PULMO", "Calling AE Title Not Recognized"),
        ("FARAWAY", "PULMO", "Calling AE Title Not Recognized"),
        ("ORTHANC", "NOTPULMO", "Called AE Title Not Recognized"),
    ] {
        let refused = Command::new("echoscu")
            .args([
                "-aet",
                calling,
                "-aec",
                called,
                "127.0.0.1",
                &port.to_string(),
            ])
            .output()
            .unwrap();
        assert!(!refused.status.success(), "{calling} -> {called}");
        let said = text(&refused);
        assert!(said.contains("Rejected Permanent"), "{said}");
        assert!(said.contains(reason), "{said}");
    }
    let (files, study) = sample();
    let sent = storescu(port, &["-aet", "ORTHANC", "-xr"], &files);
    assert!(sent.status.success(), "{}", text(&sent));
    report(&server, &study);
    let (_, status) = server.get_json(&format!("/api/v1/studies/{study}"));
    assert_eq!(status["jobs"][0]["lane"], "stat", "{status}");
}

#[test]
fn other_sop_classes_are_refused_at_association_and_not_stored() {
    let data = scratch("dimse-sop-class");
    let (server, port) = start(&data, 60.0, &[]);
    let (files, study) = sample();
    let work = scratch("dimse-sop-class-files");
    let mr = converted(&["dcmdrle"], &files[..1], &work);
    let modified = Command::new("dcmodify")
        .args(["-nb", "-m", "(0008,0016)=1.2.840.10008.5.1.4.1.1.4"])
        .arg(&mr[0])
        .status()
        .unwrap();
    assert!(modified.success());
    let sent = storescu(port, &["-v"], &mr);
    let said = text(&sent);
    assert!(said.contains("No presentation context"), "{said}");
    assert_eq!(study_instances(&server, &study), None);
    assert!(spooled(&data).is_empty());
}

/// A raw SCU on one CT Image Storage context (explicit VR little endian).
fn associate(port: u16) -> (ClientAssociation<TcpStream>, u8) {
    let association = ClientAssociationOptions::new()
        .calling_ae_title("RAWSCU")
        .called_ae_title("PULMO")
        .with_presentation_context(CT_IMAGE_STORAGE, vec![EXPLICIT_VR_LE])
        .establish(("127.0.0.1", port))
        .expect("pulmo accepts the association");
    let id = association.presentation_contexts()[0].id;
    (association, id)
}

fn pdv(context: u8, value_type: PDataValueType, is_last: bool, data: &[u8]) -> Pdu {
    Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: context,
            value_type,
            is_last,
            data: data.to_vec(),
        }],
    }
}

/// Sends a C-STORE-RQ and `dataset` (all of it, in 16 KiB fragments); returns the answer.
fn store(
    association: &mut ClientAssociation<TcpStream>,
    context: u8,
    sop: &str,
    dataset: &[u8],
) -> command::Command {
    let request = command::store_request(1, CT_IMAGE_STORAGE, sop);
    association
        .send(&pdv(context, PDataValueType::Command, true, &request))
        .unwrap();
    let chunks: Vec<&[u8]> = dataset.chunks(16 << 10).collect();
    for (n, chunk) in chunks.iter().enumerate() {
        let last = n + 1 == chunks.len();
        association
            .send(&pdv(context, PDataValueType::Data, last, chunk))
            .unwrap();
    }
    match association.receive().unwrap() {
        Pdu::PData { data } => command::read(&data[0].data).unwrap(),
        other => panic!("expected a C-STORE-RSP, got {other:?}"),
    }
}

/// An explicit VR little endian copy of a sample slice: its SOP Instance UID and the data
/// set's bytes (what follows the file meta group).
fn plain_dataset(work: &Scratch) -> (String, Vec<u8>) {
    let (files, _) = sample();
    let plain = converted(&["dcmdrle"], &files[..1], work);
    let bytes = std::fs::read(&plain[0]).unwrap();
    let group = u32::from_le_bytes(bytes[140..144].try_into().unwrap()) as usize;
    (
        attribute(&plain[0], tags::SOP_INSTANCE_UID),
        bytes[144 + group..].to_vec(),
    )
}

#[test]
fn a_corrupt_data_set_is_answered_with_a_failure_status_and_not_stored() {
    let data = scratch("dimse-corrupt");
    let (server, port) = start(&data, 60.0, &[]);
    let work = scratch("dimse-corrupt-files");
    let (sop, dataset) = plain_dataset(&work);
    let (mut association, context) = associate(port);
    let cut = store(
        &mut association,
        context,
        &sop,
        &dataset[..dataset.len() / 2],
    );
    assert_eq!(cut.status, Some(0xC000), "{cut:?}");
    assert!(cut.error_comment.is_some());
    let garbage = store(
        &mut association,
        context,
        "1.2.3.4",
        b"not a data set at all\0",
    );
    assert_eq!(garbage.status, Some(0xC000), "{garbage:?}");
    // The association goes on: a whole instance after the broken ones is stored.
    let whole = store(&mut association, context, &sop, &dataset);
    assert_eq!(whole.status, Some(0x0000), "{whole:?}");
    association.release().unwrap();
    let (_, study) = sample();
    assert_eq!(study_instances(&server, &study), Some(1));
    assert_eq!(temporaries(&data), 0);
}

#[test]
fn an_association_aborted_mid_instance_leaves_nothing_half_written() {
    let data = scratch("dimse-abort");
    let (server, port) = start(&data, 60.0, &[]);
    let work = scratch("dimse-abort-files");
    let (sop, dataset) = plain_dataset(&work);
    let (mut association, context) = associate(port);
    let request = command::store_request(1, CT_IMAGE_STORAGE, &sop);
    association
        .send(&pdv(context, PDataValueType::Command, true, &request))
        .unwrap();
    association
        .send(&pdv(context, PDataValueType::Data, false, &dataset[..4096]))
        .unwrap();
    association.abort().unwrap();
    wait_for("the partial instance to be dropped", || {
        (temporaries(&data) == 0).then_some(())
    });
    let (_, study) = sample();
    assert_eq!(study_instances(&server, &study), None);
    assert!(spooled(&data).is_empty());
}

#[test]
fn one_association_too_many_is_rejected_as_a_local_limit() {
    let data = scratch("dimse-limit");
    let (_server, port) = start(&data, 60.0, &["--dimse-max-associations", "1"]);
    let (held, _) = associate(port);
    let refused = dcmtk("echoscu", port, &[]);
    assert!(!refused.status.success());
    let said = text(&refused);
    assert!(said.contains("Rejected Transient"), "{said}");
    assert!(said.contains("Local Limit Exceeded"), "{said}");
    held.release().unwrap();
    wait_for("a free association slot", || {
        dcmtk("echoscu", port, &[]).status.success().then_some(())
    });
}

#[test]
fn without_a_peers_file_pulmo_refuses_to_listen_beyond_loopback() {
    let data = scratch("dimse-open");
    let output = crate::common::pulmo()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--dimse-listen",
            "0.0.0.0:0",
        ])
        .arg("--data")
        .arg(&*data)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("needs --dimse-peers"), "{said}");
}

#[test]
fn kill_9_during_a_storescu_association_loses_no_acknowledged_instance() {
    let data = scratch("dimse-kill");
    let (server, port) = start(&data, 60.0, &[]);
    let (files, study) = sample();
    let mut storescu = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "TCP_NODELAY=1 storescu -v -xr -aec PULMO 127.0.0.1 {port} \"$@\" 2>&1",
        ))
        .arg("storescu")
        .args(&files)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = BufReader::new(storescu.stdout.take().unwrap()).lines();
    let (mut sending, mut acknowledged) = (None, Vec::new());
    let mut server = Some(server);
    for line in lines {
        let line = line.unwrap();
        if let Some(file) = line.strip_prefix("I: Sending file: ") {
            sending = Some(PathBuf::from(file));
        } else if line.contains("Received Store Response (Success)") {
            acknowledged.push(sending.take().expect("a file was being sent"));
            if acknowledged.len() == 20 {
                server.take().unwrap().kill();
            }
        }
    }
    storescu.wait().unwrap();
    assert!(server.is_none(), "pulmo was killed mid-series");
    assert!(acknowledged.len() >= 20 && acknowledged.len() < files.len());
    let (restarted, _) = start(&data, 60.0, &[]);
    let stored = study_instances(&restarted, &study).unwrap();
    assert!(stored >= acknowledged.len() as u64);
    let spooled: Vec<String> = spooled(&data)
        .into_iter()
        .map(|(path, _)| path.file_stem().unwrap().to_str().unwrap().to_owned())
        .collect();
    for file in &acknowledged {
        let sop = attribute(file, tags::SOP_INSTANCE_UID);
        assert!(
            spooled.contains(&sop),
            "{} was acknowledged but is lost",
            file.display()
        );
    }
    assert_eq!(
        temporaries(&data),
        0,
        "the restart cleared what was half-written"
    );
}

/// A port that was free a moment ago (storescp cannot take port 0).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// dcmtk's storescp as the PACS (AE `PACS`), writing what it receives into `dir`.
struct StoreScp(std::process::Child);

impl StoreScp {
    fn start(dir: &Path, port: u16) -> StoreScp {
        let child = Command::new("storescp")
            .env("TCP_NODELAY", "1")
            .args(["-aet", "PACS", "-od"])
            .arg(dir)
            .arg(port.to_string())
            .spawn()
            .expect("storescp runs");
        wait_for("storescp to listen", || {
            TcpStream::connect(("127.0.0.1", port)).ok().map(drop)
        });
        StoreScp(child)
    }
}

impl Drop for StoreScp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The job of `study` once its C-STORE push has left `pending` and `sending`.
fn pushed_job(server: &Server, study: &str) -> serde_json::Value {
    wait_for("the C-STORE push to end", || {
        let (_, status) = server.get_json(&format!("/api/v1/studies/{study}"));
        let job = status["jobs"].as_array()?.first()?.clone();
        let state = job["dimse"]["state"].as_str()?;
        (state == "done" || state == "dead").then_some(job)
    })
}

#[test]
fn results_are_pushed_back_by_c_store_to_a_storage_scp() {
    let data = scratch("dimse-push");
    let received = scratch("dimse-push-pacs");
    let pacs_port = free_port();
    let _pacs = StoreScp::start(&received, pacs_port);
    let destination = format!("PACS@127.0.0.1:{pacs_port}");
    let (server, port) = start(&data, 0.5, &["--push-dimse", &destination]);
    let (files, study) = sample();
    let sent = storescu(port, &["-xr"], &files);
    assert!(sent.status.success(), "{}", text(&sent));
    let job = pushed_job(&server, &study);
    assert_eq!(job["dimse"]["state"], "done", "{job}");
    assert_eq!(job["dimse"]["attempts"], 1);
    let mut modalities: Vec<String> = std::fs::read_dir(&*received)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            assert_eq!(attribute(&path, tags::STUDY_INSTANCE_UID), study);
            attribute(&path, tags::MODALITY)
        })
        .collect();
    modalities.sort();
    modalities.dedup();
    assert!(modalities.contains(&"SR".to_owned()), "{modalities:?}");
    assert!(modalities.contains(&"SEG".to_owned()), "{modalities:?}");
    assert!(
        modalities.len() >= 3,
        "SR, SEG and key images: {modalities:?}"
    );
}

#[test]
fn a_storage_scp_that_is_not_there_gets_bounded_attempts_and_the_push_ends_dead() {
    let data = scratch("dimse-push-dead");
    let destination = format!("PACS@127.0.0.1:{}", free_port());
    let extra = [
        "--push-dimse",
        &destination,
        "--push-max-attempts",
        "2",
        "--push-backoff-seconds",
        "0.1",
    ];
    let (server, port) = start(&data, 0.5, &extra);
    let (files, study) = sample();
    let sent = storescu(port, &["-xr"], &files);
    assert!(sent.status.success(), "{}", text(&sent));
    let job = pushed_job(&server, &study);
    assert_eq!(job["dimse"]["state"], "dead", "{job}");
    assert_eq!(job["dimse"]["attempts"], 2);
    let error = job["dimse"]["last_error"].as_str().unwrap();
    assert!(
        error.contains("could not associate with PACS@127.0.0.1"),
        "{error}"
    );
}

/// A server started with `limit` refuses a whole sample slice with 0xA700 and a comment
/// holding `why`, and keeps nothing of it.
fn out_of_resources(name: &str, limit: &[&str], why: &str) {
    let data = scratch(name);
    let (server, port) = start(&data, 60.0, limit);
    let work = scratch(&format!("{name}-files"));
    let (sop, dataset) = plain_dataset(&work);
    let (mut association, context) = associate(port);
    let refused = store(&mut association, context, &sop, &dataset);
    assert_eq!(refused.status, Some(0xA700), "{refused:?}");
    let comment = refused.error_comment.unwrap_or_default();
    assert!(comment.contains(why), "{comment}");
    association.release().unwrap();
    let (_, study) = sample();
    assert_eq!(study_instances(&server, &study), None);
    assert_eq!(temporaries(&data), 0);
}

#[test]
fn a_full_disk_is_answered_out_of_resources_at_once_and_nothing_is_kept() {
    out_of_resources(
        "dimse-full",
        &["--min-free-mib", "1000000000"],
        "disk space",
    );
}

#[test]
fn an_instance_over_the_size_limit_is_refused_and_dropped() {
    out_of_resources(
        "dimse-large",
        &["--max-instance-mib", "0"],
        "larger than pulmo takes",
    );
}
