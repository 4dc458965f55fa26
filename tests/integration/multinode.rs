//! Three `pulmo serve` nodes sharing one PostgreSQL job store (a real server from
//! Debian's packages, on a loopback port, in a temporary folder) and one spool folder:
//! studies sent to different nodes, one series' instances spread over all three, and one
//! node killed with SIGKILL while it holds a job. Every acknowledged instance ends in
//! exactly one report, readable from every node.

use std::path::{Path, PathBuf};

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use pulmo_service::testing::Postgres;
use reqwest::StatusCode;

use crate::common::scratch;
use crate::common::server::*;

/// How many studies are sent, each a copy of the sample series under new UIDs.
const STUDIES: usize = 6;

/// The sample study again under `study`'s UIDs, written to `dir`.
fn copy_of_sample(files: &[PathBuf], study: &str, dir: &Path) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    let series = format!("{study}.1");
    files
        .iter()
        .enumerate()
        .map(|(i, file)| {
            let sop = format!("{series}.{}", i + 1);
            let mut object = dicom_object::open_file(file).unwrap();
            for (tag, uid) in [
                (tags::STUDY_INSTANCE_UID, study),
                (tags::SERIES_INSTANCE_UID, series.as_str()),
                (tags::SOP_INSTANCE_UID, sop.as_str()),
            ] {
                object.put(DataElement::new(tag, VR::UI, PrimitiveValue::from(uid)));
            }
            object.update_meta(|meta| meta.media_storage_sop_instance_uid = sop.clone());
            let path = dir.join(format!("{}.dcm", i + 1));
            object.write_to_file(&path).unwrap();
            path
        })
        .collect()
}

/// Starts node `name` on the shared store and spool.
fn node(name: &str, data: &Path, url: &str, shared: &Path) -> Server {
    let shared = shared.to_str().unwrap();
    Server::start(
        data,
        0.5,
        &[
            "--store",
            url,
            "--spool-dir",
            shared,
            "--node",
            name,
            "--lease-seconds",
            "2",
            "--jobs",
            "1",
        ],
    )
}

fn sql(client: &mut postgres::Client, query: &str) -> Vec<postgres::Row> {
    client.query(query, &[]).unwrap()
}

#[test]
fn three_nodes_on_one_postgres_analyse_every_study_once_though_one_is_killed_mid_job() {
    let pg = Postgres::start().unwrap_or_else(|e| panic!("{e}"));
    let url = pg.database("pulmo").unwrap();
    let mut db = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let shared = scratch("multinode-shared");
    let studies_dir = scratch("multinode-studies");
    let data: Vec<_> = (0..3).map(|i| scratch(&format!("multinode-{i}"))).collect();
    let names = ["a", "b", "c"];
    let mut nodes: Vec<Option<Server>> = names
        .iter()
        .zip(&data)
        .map(|(name, data)| Some(node(name, data, &url, &shared)))
        .collect();
    let (files, _) = sample();

    // Study 0's instances go to all three nodes in turn; study k to node k % 3.
    let studies: Vec<String> = (0..STUDIES)
        .map(|k| format!("1.2.826.0.1.3680043.9.7744.{}", k + 1))
        .collect();
    for (k, study) in studies.iter().enumerate() {
        let copy = copy_of_sample(&files, study, &studies_dir.join(k.to_string()));
        for (i, chunk) in copy.chunks(copy.len().div_ceil(3)).enumerate() {
            let at = if k == 0 { i } else { k } % 3;
            let server = nodes[at].as_ref().unwrap();
            let stored = stow(server, "/dicomweb/studies", multipart(&dicom_parts(chunk)));
            assert_eq!(stored.status(), StatusCode::OK, "study {k} part {i}");
        }
    }

    // Whichever node holds a job first is killed the moment it does (which node claims
    // what is a race); its lease (2 s) then lapses and another node takes the job over.
    let (held, owner) = wait_for("a node to hold a job", || {
        let rows = sql(
            &mut db,
            "SELECT id, lease_owner FROM jobs WHERE state = 'running' ORDER BY id LIMIT 1",
        );
        rows.first()
            .map(|r| (r.get::<_, i64>(0), r.get::<_, String>(1)))
    });
    let victim = names
        .iter()
        .position(|n| *n == owner)
        .expect("a known node");
    nodes[victim].take().unwrap().kill();

    // Every study ends in one report, however its jobs went.
    let survivor = nodes.iter().flatten().next().unwrap();
    for study in &studies {
        let report = report(survivor, study);
        assert_eq!(report["series"]["slices"], files.len(), "{study}");
    }
    let taken = sql(
        &mut db,
        &format!("SELECT state, lease_owner, attempt FROM jobs WHERE id = {held}"),
    );
    let (state, finished_by, attempt): (String, String, i64) =
        (taken[0].get(0), taken[0].get(1), taken[0].get(2));
    assert_eq!(state, "done", "the killed node's job was taken over");
    assert_ne!(finished_by, owner);
    assert!(attempt >= 2, "attempt {attempt}");

    // Exactly one analysis per series: one done job each, none failed, none left over.
    let per_series = sql(
        &mut db,
        "SELECT series_uid, count(*) FILTER (WHERE state = 'done'),
            count(*) FILTER (WHERE state <> 'done'), max(instances)
         FROM jobs GROUP BY series_uid ORDER BY series_uid",
    );
    assert_eq!(per_series.len(), STUDIES);
    for row in &per_series {
        let series: String = row.get(0);
        let (done, other, instances): (i64, i64, Option<i64>) =
            (row.get(1), row.get(2), row.get(3));
        assert_eq!((done, other), (1, 0), "jobs of series {series}");
        assert_eq!(instances, Some(files.len() as i64), "series {series}");
    }
    let acknowledged: i64 = sql(&mut db, "SELECT count(*) FROM instances")[0].get(0);
    assert_eq!(acknowledged, (STUDIES * files.len()) as i64);

    // Any node answers: the killed node restarted (same name) reads the same reports and
    // searches the same studies as the other two.
    nodes[victim] = Some(node(names[victim], &data[victim], &url, &shared));
    for server in nodes.iter().flatten() {
        for study in &studies {
            let (status, body) = server.get_json(&format!("/api/v1/studies/{study}/report"));
            assert_eq!(status, StatusCode::OK, "{study} from {}", server.base);
            assert_eq!(body["reports"].as_array().unwrap().len(), 1, "{body}");
        }
        let (_, listed) = server.get_json("/dicomweb/studies");
        assert_eq!(listed.as_array().unwrap().len(), STUDIES, "{listed}");
        let metrics = client()
            .get(server.url("/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        assert!(metrics.contains("node=\""), "metrics carry the node label");
    }

    // SIGTERM drains a node: it exits by itself, cleanly.
    let b = nodes[1].take().unwrap();
    assert!(b.terminate().success(), "node b drains and exits 0");

    // Without its store a node is not ready.
    drop(db);
    drop(pg);
    let c = nodes[2].as_ref().unwrap();
    let ready = wait_for("/readyz to fail", || {
        let answer = client().get(c.url("/readyz")).send().ok()?;
        (answer.status() != StatusCode::OK).then_some(answer.status())
    });
    assert_eq!(ready, StatusCode::SERVICE_UNAVAILABLE);
}
