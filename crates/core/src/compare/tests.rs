use super::*;
use crate::compare;
use crate::findings::{Change, LungRads};
use crate::report::tests::analysis;
use crate::testing::finding;

/// Points on two unequal ellipsoids standing side by side, like a pair of lungs (mm).
fn lungs() -> Vec<[f64; 3]> {
    let mut points = Vec::new();
    for (centre, radii) in [
        ([-75.0, 0.0, 0.0], [50.0, 70.0, 115.0]),
        ([80.0, 8.0, -12.0], [56.0, 78.0, 125.0]),
    ] {
        let n = 2500;
        for k in 0..n {
            // A Fibonacci sphere, stretched onto the ellipsoid.
            let z = 1.0 - 2.0 * (k as f64 + 0.5) / n as f64;
            let r = (1.0 - z * z).sqrt();
            let phi = k as f64 * std::f64::consts::PI * (3.0 - 5f64.sqrt());
            let unit = [r * phi.cos(), r * phi.sin(), z];
            points.push(std::array::from_fn(|a| centre[a] + radii[a] * unit[a]));
        }
    }
    points
}

/// A rotation by `degrees` about axis `axis` (0 = x, 1 = y, 2 = z) followed by `shift`.
fn rotation(axis: usize, degrees: f64, shift: [f64; 3]) -> Affine {
    let (s, c) = degrees.to_radians().sin_cos();
    let (a, b) = match axis {
        0 => (1, 2),
        1 => (2, 0),
        _ => (0, 1),
    };
    let mut m = Affine::translation(shift);
    m.0[a][a] = c;
    m.0[a][b] = -s;
    m.0[b][a] = s;
    m.0[b][b] = c;
    m
}

fn worst_error(found: &Affine, truth: &Affine, points: &[[f64; 3]]) -> f64 {
    points
        .iter()
        .map(|p| {
            let (a, b) = (found.apply(*p), truth.apply(*p));
            (0..3).map(|i| (a[i] - b[i]).powi(2)).sum::<f64>().sqrt()
        })
        .fold(0.0, f64::max)
}

/// `fixed` is the prior; the current scan is the prior moved by `motion`, so the map from
/// the current scan to the prior must undo it.
fn moved(motion: &Affine) -> (Vec<[f64; 3]>, Vec<[f64; 3]>, Affine) {
    let prior = lungs();
    let current: Vec<[f64; 3]> = prior.iter().map(|p| motion.apply(*p)).collect();
    let undo = invert(motion);
    (current, prior, undo)
}

fn invert(m: &Affine) -> Affine {
    // Inverse of an affine map by solving on the basis vectors and the origin.
    let origin = [0.0; 3];
    let mut inv = Affine::IDENTITY;
    // Linear part: inverse 3x3 by cofactors.
    let a = &m.0;
    let det = m.determinant();
    let cof = |r: usize, c: usize| {
        let (r1, r2) = ((r + 1) % 3, (r + 2) % 3);
        let (c1, c2) = ((c + 1) % 3, (c + 2) % 3);
        a[r1][c1] * a[r2][c2] - a[r1][c2] * a[r2][c1]
    };
    for r in 0..3 {
        for c in 0..3 {
            inv.0[r][c] = cof(c, r) / det;
        }
    }
    let t = inv.apply(m.apply(origin));
    (0..3).for_each(|r| inv.0[r][3] = -t[r]);
    inv
}

#[test]
fn registration_undoes_a_shift_of_centimetres_and_a_small_rotation() {
    let motion = rotation(2, 6.0, [32.0, -21.0, 45.0]).after(&rotation(0, 3.0, [0.0; 3]));
    let (current, prior, undo) = moved(&motion);
    let aligned = register::register(&current, &prior).unwrap();
    let error = worst_error(&aligned.map, &undo, &current);
    assert!(error < 1.0, "worst point error {error:.2} mm");
    assert!(
        aligned.residual_mm < 0.5,
        "residual {}",
        aligned.residual_mm
    );
}

#[test]
fn registration_takes_up_a_deeper_breath() {
    // Inspiration: the lungs 8 % taller and 3 % wider, and the patient shifted.
    let mut breath = Affine::translation([-15.0, 10.0, -30.0]);
    breath.0[2][2] = 1.08;
    breath.0[0][0] = 1.03;
    let (current, prior, undo) = moved(&breath);
    let aligned = register::register(&current, &prior).unwrap();
    let error = worst_error(&aligned.map, &undo, &current);
    assert!(error < 1.5, "worst point error {error:.2} mm");
}

fn snapshot(points: Vec<[f64; 3]>, date: &str) -> Snapshot {
    Snapshot {
        lung_surface_mm: points,
        study_date: Some(date.to_owned()),
        patient_key: compare::patient_key("P-1", ""),
        views: Vec::new(),
    }
}

/// A prior with three calls (a 6 mm, an 8 mm and a 5 mm nodule) and the current report of
/// the same patient shifted by `shift`, with the first grown, the second stable, the third
/// gone and a new one.
fn pair(shift: [f64; 3]) -> (Report, Snapshot, Prior) {
    let (mut prior_report, _) = analysis();
    let motion = Affine::translation(shift);
    let nodule = |id, c: [f64; 3], d: f64, v: f64, cat| {
        let mut f = finding(0.9, cat);
        f.id = id;
        f.center_patient_mm = c;
        f.diameter_mm = d;
        f.volume_mm3 = v;
        f.tracking_uid = Some(format!("2.25.{id}"));
        f
    };
    prior_report.findings = vec![
        nodule(1, [-70.0, 10.0, 20.0], 6.0, 113.0, LungRads::Cat3),
        nodule(2, [80.0, 0.0, -40.0], 8.0, 268.0, LungRads::Cat4A),
        nodule(3, [-60.0, -30.0, 60.0], 5.0, 65.0, LungRads::Cat2),
    ];
    let (mut current, _) = analysis();
    current.findings = vec![
        nodule(
            1,
            motion.apply([-70.0, 10.5, 20.0]),
            8.0,
            268.0,
            LungRads::Cat4A,
        ),
        nodule(
            2,
            motion.apply([80.0, 0.0, -41.0]),
            8.2,
            280.0,
            LungRads::Cat4A,
        ),
        nodule(
            3,
            motion.apply([70.0, 20.0, 30.0]),
            6.5,
            144.0,
            LungRads::Cat3,
        ),
    ];
    for f in &mut current.findings {
        f.tracking_uid = Some(format!("2.25.9{}", f.id));
    }
    let prior_points = lungs();
    let current_points = prior_points.iter().map(|p| motion.apply(*p)).collect();
    let prior = Prior {
        report: prior_report,
        snapshot: snapshot(prior_points, "20250105"),
    };
    (current, snapshot(current_points, "20260105"), prior)
}

#[test]
fn a_follow_up_pairs_nodules_and_says_how_each_changed() {
    let (mut report, snapshot, prior) = pair([40.0, -25.0, 30.0]);
    compare(&mut report, &snapshot, &prior);
    let comparison = report.comparison.as_ref().unwrap();
    assert_eq!(comparison.interval_days, Some(365));
    assert_eq!(comparison.prior_study_date.as_deref(), Some("2025-01-05"));
    assert_eq!(comparison.registration.status, RegistrationStatus::Ok);
    assert!(comparison.registration.residual_mm.unwrap() < 0.5);
    let changes: Vec<Change> = report
        .findings
        .iter()
        .map(|f| f.followup.as_ref().unwrap().change)
        .collect();
    assert_eq!(changes, [Change::Growing, Change::Stable, Change::New]);
    let grown = report.findings[0].followup.as_ref().unwrap();
    assert_eq!(grown.prior.as_ref().unwrap().finding_id, 1);
    assert_eq!(grown.volume_change_percent, Some(137.2));
    assert_eq!(grown.volume_doubling_days, Some(293.0));
    // The matched nodules keep the prior's Tracking UIDs; the new one keeps its own.
    let uids: Vec<&str> = report
        .findings
        .iter()
        .map(|f| f.tracking_uid.as_deref().unwrap())
        .collect();
    assert_eq!(uids, ["2.25.1", "2.25.2", "2.25.93"]);
    assert_eq!(report.resolved.len(), 1);
    assert_eq!(report.resolved[0].finding_id, 3);
    // Lung-RADS with comparison: growing 8 mm is 4B, 4A stable for a year steps down to 3,
    // a new 6.5 mm solid nodule is 4A.
    let categories: Vec<LungRads> = report.findings.iter().map(|f| f.lung_rads).collect();
    assert_eq!(
        categories,
        [LungRads::Cat4B, LungRads::Cat3, LungRads::Cat4A]
    );
    assert_eq!(report.lung_rads, LungRads::Cat4B);
    assert!(
        report
            .lung_rads_rule
            .starts_with("finding 1: solid, growing, 8 mm or more: 4B"),
        "{}",
        report.lung_rads_rule
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["findings"][0]["change"], "growing");
    assert_eq!(json["findings"][2]["prior"], serde_json::Value::Null);
    assert_eq!(
        json["findings"][1]["volume_doubling_days"],
        serde_json::Value::Null
    );
    assert_eq!(json["comparison"]["registration"]["method"], METHOD);
    assert_eq!(json["resolved"][0]["finding_id"], 3);
}

#[test]
fn a_failed_registration_is_said_plainly_and_compares_nothing() {
    let (mut report, mut snapshot, prior) = pair([0.0; 3]);
    snapshot.lung_surface_mm.truncate(50);
    compare(&mut report, &snapshot, &prior);
    let registration = &report.comparison.as_ref().unwrap().registration;
    assert_eq!(registration.status, RegistrationStatus::Failed);
    assert!(registration
        .reason
        .as_ref()
        .unwrap()
        .contains("too little lung"));
    assert_eq!(registration.residual_mm, None);
    assert!(report.findings.iter().all(|f| f.followup.is_none()));
    assert!(report.resolved.is_empty());
    assert!(report.warnings.iter().any(|w| w.contains("registration")));
}

#[test]
fn surfaces_that_do_not_correspond_fail_the_registration() {
    let (mut report, mut snapshot, prior) = pair([0.0; 3]);
    // A "lung" that is a flat sheet does not align with a pair of lungs.
    snapshot.lung_surface_mm = (0..3000)
        .map(|n| [(n % 60) as f64 * 4.0, (n / 60) as f64 * 4.0, 0.0])
        .collect();
    compare(&mut report, &snapshot, &prior);
    let registration = &report.comparison.as_ref().unwrap().registration;
    assert_eq!(
        registration.status,
        RegistrationStatus::Failed,
        "{registration:?}"
    );
}

#[test]
fn an_interval_is_counted_in_days_across_leap_years() {
    assert_eq!(interval_days(Some("20240101"), Some("20250101")), Some(366));
    assert_eq!(interval_days(Some("20250228"), Some("20250301")), Some(1));
    assert_eq!(interval_days(Some("2025"), Some("20250301")), None);
    assert_eq!(interval_days(None, Some("20250301")), None);
    assert_eq!(iso_date("20260105").as_deref(), Some("2026-01-05"));
}
