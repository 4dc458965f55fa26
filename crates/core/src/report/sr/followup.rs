//! The comparison with the prior study in the SR: what [`super::to_sr`] adds when the
//! report has a `comparison` (and only then, so an SR without a prior is unchanged).
//!
//! - At the root, after Imaging Measurements, TID 1500's Qualitative Evaluations container
//!   says which study and series the findings were compared with, when it was taken, how
//!   far apart, how the scans were aligned (or that the alignment failed), and lists the
//!   prior's calls that no finding matched (resolved).
//! - In each finding's measurement group: its change since the prior as a qualitative
//!   evaluation, the matched prior finding with its diameter and volume, the change in
//!   diameter, volume and the volume doubling time as measurements.
//! - The finding's Lung-RADS category says that it was assessed with comparison, and by
//!   which rule.
//!
//! Standard codes where DICOM has them (the change values are those of CID 6134 "Chest
//! Qualitative Temporal Difference Type" and CID 6002); the private 99PULMO scheme where
//! we found none. Each choice is listed in `docs/dicom-conformance.md`.

use dicom_core::VR;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::{code, codes, container, header, text_item, tracking_id_of, uidref};
use crate::findings::{Change, Finding, FollowUp, PriorFinding};
use crate::report::dcm::{self, code_seq, item, seq, text, Code};
use crate::report::{Comparison, RegistrationStatus, Report};

pub(super) mod names {
    use super::Code;
    /// TID 1500 row 12.
    pub const QUALITATIVE_EVALUATIONS: Code = Code("C0034375", "UMLS", "Qualitative Evaluations");
    pub const COMPARISON_DONE: Code = Code("122140", "DCM", "Comparison with Prior Study Done");
    pub const YES: Code = Code("373066001", "SCT", "Yes");
    pub const NO: Code = Code("373067005", "SCT", "No");
    pub const STUDY_UID: Code = Code("110180", "DCM", "Study Instance UID");
    pub const SERIES_UID: Code = Code("112002", "DCM", "Series Instance UID");
    pub const STUDY_DATE: Code = Code("111060", "DCM", "Study Date");
    /// CID 7002 "Diagnostic Imaging Report Element".
    pub const PREVIOUS_FINDING: Code = Code("121069", "DCM", "Previous Finding");
    /// CID 6133 "Chest Quantitative Temporal Difference Type".
    pub const DIFFERENCE_IN_SIZE: Code = Code("442714003", "SCT", "Difference in size");
    pub const INTERVAL: Code = Code("interval", "99PULMO", "Interval since prior study");
    pub const REGISTRATION: Code = Code("registration", "99PULMO", "Registration with prior study");
    pub const CHANGE: Code = Code("change", "99PULMO", "Change since prior study");
    pub const VOLUME_CHANGE: Code = Code(
        "volume-change",
        "99PULMO",
        "Volume change since prior study",
    );
    pub const DOUBLING_TIME: Code = Code("vdt", "99PULMO", "Volume doubling time");
    pub const LUNG_RADS_RULE: Code = Code("lung-rads-rule", "99PULMO", "Lung-RADS rule");
    /// CID 6002 "Change Since Last Mammogram or Prior Surgery": CID 6134 has no "new".
    pub const NEW: Code = Code("129721008", "SCT", "New finding");
    /// CID 6134.
    pub const INCREASE: Code = Code("15454001", "SCT", "Increase in size");
    /// CID 6134.
    pub const NO_CHANGE: Code = Code("129723006", "SCT", "No significant changes in the finding");
    /// CID 6134.
    pub const DECREASE: Code = Code("19776001", "SCT", "Decrease in size");
    pub const RESOLVED: Code = Code("resolved", "99PULMO", "Resolved");
    pub const PERCENT: Code = Code("%", "UCUM", "percent");
    pub const DAY: Code = Code("d", "UCUM", "day");
}

/// The change class as a code.
fn change_code(change: Change) -> Code {
    match change {
        Change::New => names::NEW,
        Change::Growing => names::INCREASE,
        Change::Stable => names::NO_CHANGE,
        Change::Shrinking => names::DECREASE,
    }
}

/// The root's Qualitative Evaluations container; none without a comparison.
pub(super) fn qualitative_evaluations(report: &Report) -> Option<InMemDicomObject> {
    let comparison = report.comparison.as_ref()?;
    let mut children = vec![prior_study(comparison)];
    children.extend(report.resolved.iter().map(resolved));
    Some(container(
        "CONTAINS",
        names::QUALITATIVE_EVALUATIONS,
        children,
    ))
}

/// "Comparison with Prior Study Done" = Yes (No when the registration failed), with the
/// prior's identity, date, the interval and the registration as properties.
fn prior_study(c: &Comparison) -> InMemDicomObject {
    let ok = c.registration.status == RegistrationStatus::Ok;
    let mut properties = vec![
        uidref(
            "HAS PROPERTIES",
            names::STUDY_UID,
            &c.prior_study_instance_uid,
        ),
        uidref(
            "HAS PROPERTIES",
            names::SERIES_UID,
            &c.prior_series_instance_uid,
        ),
    ];
    if let Some(date) = &c.prior_study_date {
        properties.push(date_item(names::STUDY_DATE, &date.replace('-', "")));
    }
    if let Some(days) = c.interval_days {
        properties.push(num(
            "HAS PROPERTIES",
            names::INTERVAL,
            days as f64,
            names::DAY,
        ));
    }
    properties.push(text_item(
        "HAS PROPERTIES",
        names::REGISTRATION,
        &registration_text(c),
    ));
    let answer = if ok { names::YES } else { names::NO };
    code("CONTAINS", names::COMPARISON_DONE, answer, properties)
}

/// The registration in words: method and residual, or why it failed.
fn registration_text(c: &Comparison) -> String {
    let r = &c.registration;
    match r.status {
        RegistrationStatus::Ok => match r.residual_mm {
            Some(mm) => format!("{}, residual {mm:.1} mm", r.method),
            None => r.method.clone(),
        },
        RegistrationStatus::Failed => format!(
            "{} failed: {}",
            r.method,
            r.reason.as_deref().unwrap_or("no reason recorded")
        ),
    }
}

/// A prior call no finding matched: "Previous Finding" `nodule-<prior id>` with its change
/// (resolved), size and Tracking UID.
fn resolved(p: &PriorFinding) -> InMemDicomObject {
    let mut properties = vec![code(
        "HAS PROPERTIES",
        names::CHANGE,
        names::RESOLVED,
        vec![],
    )];
    properties.extend(prior_size(p));
    properties.extend(
        p.tracking_uid
            .as_deref()
            .map(|uid| uidref("HAS PROPERTIES", codes::TRACKING_UID, uid)),
    );
    previous_finding("CONTAINS", p, properties)
}

/// `TEXT (121069, DCM, "Previous Finding")` naming a prior finding as its SR did.
fn previous_finding(
    relationship: &str,
    p: &PriorFinding,
    properties: Vec<InMemDicomObject>,
) -> InMemDicomObject {
    let mut elements = header(relationship, "TEXT", Some(names::PREVIOUS_FINDING));
    elements.push(text(tags::TEXT_VALUE, VR::UT, tracking_id_of(p.finding_id)));
    if !properties.is_empty() {
        elements.push(seq(tags::CONTENT_SEQUENCE, properties));
    }
    item(elements)
}

/// The prior finding's diameter and volume, as its report measured them.
fn prior_size(p: &PriorFinding) -> [InMemDicomObject; 2] {
    [
        num("HAS PROPERTIES", codes::DIAMETER, p.diameter_mm, codes::MM),
        num("HAS PROPERTIES", codes::VOLUME, p.volume_mm3, codes::MM3),
    ]
}

/// A finding's comparison items for its measurement group; none without a follow-up.
pub(super) fn finding_items(f: &Finding) -> Vec<InMemDicomObject> {
    let Some(up) = &f.followup else {
        return vec![];
    };
    let matched = up
        .prior
        .as_ref()
        .map(|p| previous_finding("HAS PROPERTIES", p, prior_size(p).into()));
    let mut items = vec![code(
        "CONTAINS",
        names::CHANGE,
        change_code(up.change),
        matched.into_iter().collect(),
    )];
    items.extend(measurements(up));
    items
}

/// Diameter change (mm), volume change (%) and volume doubling time (days), where known.
fn measurements(up: &FollowUp) -> Vec<InMemDicomObject> {
    [
        (names::DIFFERENCE_IN_SIZE, up.diameter_change_mm, codes::MM),
        (
            names::VOLUME_CHANGE,
            up.volume_change_percent,
            names::PERCENT,
        ),
        (names::DOUBLING_TIME, up.volume_doubling_days, names::DAY),
    ]
    .into_iter()
    .filter_map(|(name, value, unit)| value.map(|v| num("CONTAINS", name, v, unit)))
    .collect()
}

/// The Lung-RADS item's children: with a comparison, that it was assessed with one and the
/// rule that applied; none otherwise (the SR of a first scan is unchanged).
pub(super) fn lung_rads_basis(f: &Finding) -> Vec<InMemDicomObject> {
    if f.followup.is_none() {
        return vec![];
    }
    let mut children = vec![code(
        "HAS PROPERTIES",
        names::COMPARISON_DONE,
        names::YES,
        vec![],
    )];
    if !f.lung_rads_rule.is_empty() {
        children.push(text_item(
            "HAS PROPERTIES",
            names::LUNG_RADS_RULE,
            &f.lung_rads_rule,
        ));
    }
    children
}

fn num(relationship: &str, name: Code, value: f64, unit: Code) -> InMemDicomObject {
    let measured = item([
        code_seq(tags::MEASUREMENT_UNITS_CODE_SEQUENCE, unit),
        dcm::ds(tags::NUMERIC_VALUE, &[value]),
    ]);
    let mut elements = header(relationship, "NUM", Some(name));
    elements.push(seq(tags::MEASURED_VALUE_SEQUENCE, vec![measured]));
    item(elements)
}

fn date_item(name: Code, yyyymmdd: &str) -> InMemDicomObject {
    let mut elements = header("HAS PROPERTIES", "DATE", Some(name));
    elements.push(text(tags::DATE, VR::DA, yyyymmdd));
    item(elements)
}

#[cfg(test)]
mod tests {
    use super::super::to_sr;
    use super::*;
    use crate::findings::LungRads;
    use crate::report::tests::{analysis, round_trip, string, volume};
    use crate::report::{DerivedIds, Registration};
    use crate::testing::finding;

    /// Every item under `obj`, depth first.
    fn items(obj: &InMemDicomObject) -> Vec<&InMemDicomObject> {
        children(obj)
            .iter()
            .flat_map(|c| std::iter::once(c).chain(items(c)))
            .collect()
    }

    fn children(obj: &InMemDicomObject) -> &[InMemDicomObject] {
        obj.get(tags::CONTENT_SEQUENCE)
            .and_then(|e| e.items())
            .unwrap_or(&[])
    }

    fn code_of(obj: &InMemDicomObject, tag: dicom_core::Tag) -> (String, String) {
        let c = &obj.get(tag).unwrap().items().unwrap()[0];
        (
            string(c, tags::CODE_VALUE),
            string(c, tags::CODING_SCHEME_DESIGNATOR),
        )
    }

    /// The items whose concept name is `code` (value, scheme).
    fn named<'a>(all: &[&'a InMemDicomObject], code: Code) -> Vec<&'a InMemDicomObject> {
        all.iter()
            .copied()
            .filter(|i| {
                i.get(tags::CONCEPT_NAME_CODE_SEQUENCE).is_some()
                    && code_of(i, tags::CONCEPT_NAME_CODE_SEQUENCE)
                        == (code.0.to_owned(), code.1.to_owned())
            })
            .collect()
    }

    fn one<'a>(all: &[&'a InMemDicomObject], code: Code) -> &'a InMemDicomObject {
        let found = named(all, code);
        assert_eq!(found.len(), 1, "{} items named {}", found.len(), code.2);
        found[0]
    }

    fn value_code(obj: &InMemDicomObject) -> (String, String) {
        code_of(obj, tags::CONCEPT_CODE_SEQUENCE)
    }

    fn number(obj: &InMemDicomObject) -> (f64, String) {
        let measured = &obj
            .get(tags::MEASURED_VALUE_SEQUENCE)
            .unwrap()
            .items()
            .unwrap()[0];
        let value = string(measured, tags::NUMERIC_VALUE).parse().unwrap();
        (
            value,
            code_of(measured, tags::MEASUREMENT_UNITS_CODE_SEQUENCE).0,
        )
    }

    fn prior_finding(id: u32, diameter_mm: f64, volume_mm3: f64) -> PriorFinding {
        let mut f = finding(0.9, LungRads::Cat3);
        f.id = id;
        f.diameter_mm = diameter_mm;
        f.volume_mm3 = volume_mm3;
        f.tracking_uid = Some(format!("2.25.{id}"));
        PriorFinding::quote(&f)
    }

    /// The test analysis compared with a prior a year earlier: its finding grew from prior
    /// finding 3, and prior finding 4 resolved.
    fn followup_report(status: RegistrationStatus) -> Report {
        let (mut report, _) = analysis();
        report.comparison = Some(Comparison {
            prior_study_instance_uid: "1.2.9".into(),
            prior_series_instance_uid: "1.2.9.4".into(),
            prior_study_date: Some("2025-12-01".into()),
            interval_days: Some(365),
            registration: Registration {
                method: "lung-surface-icp-affine".into(),
                residual_mm: Some(1.26),
                status,
                reason: (status == RegistrationStatus::Failed).then(|| "too little lung".into()),
                current_to_prior: None,
                time_ms: 3.0,
            },
            matching: "nearest".into(),
        });
        if status == RegistrationStatus::Ok {
            let f = &mut report.findings[0];
            f.diameter_mm = 8.0;
            f.volume_mm3 = 268.0;
            f.lung_rads_rule = "solid, growing, under 8 mm: 4A".into();
            f.followup = Some(FollowUp::matched(
                f,
                prior_finding(3, 5.0, 65.0),
                Some(365.0),
            ));
            report.resolved = vec![prior_finding(4, 6.0, 113.0)];
        }
        report
    }

    fn sr_items(report: &Report) -> dicom_object::DefaultDicomObject {
        let ids = DerivedIds::new(report.findings.len());
        round_trip(to_sr(report, &[], &volume(), &ids))
    }

    #[test]
    fn the_root_names_the_prior_study_it_was_compared_with() {
        let obj = sr_items(&followup_report(RegistrationStatus::Ok));
        let root = children(&obj);
        let evaluations = one(
            &root.iter().collect::<Vec<_>>(),
            names::QUALITATIVE_EVALUATIONS,
        );
        // After Imaging Measurements, as TID 1500 orders them.
        assert!(std::ptr::eq(root.last().unwrap(), evaluations));
        let all = items(evaluations);
        let done = named(&all, names::COMPARISON_DONE)[0];
        assert_eq!(value_code(done), ("373066001".into(), "SCT".into()));
        let props = items(done);
        assert_eq!(string(one(&props, names::STUDY_UID), tags::UID), "1.2.9");
        assert_eq!(string(one(&props, names::SERIES_UID), tags::UID), "1.2.9.4");
        assert_eq!(
            string(one(&props, names::STUDY_DATE), tags::DATE),
            "20251201"
        );
        assert_eq!(number(one(&props, names::INTERVAL)), (365.0, "d".into()));
        let registration = string(one(&props, names::REGISTRATION), tags::TEXT_VALUE);
        assert_eq!(registration, "lung-surface-icp-affine, residual 1.3 mm");
    }

    #[test]
    fn resolved_prior_findings_are_listed_with_their_size() {
        let obj = sr_items(&followup_report(RegistrationStatus::Ok));
        let all = items(&obj);
        let evaluations = one(&all, names::QUALITATIVE_EVALUATIONS);
        let previous: Vec<_> = children(evaluations)
            .iter()
            .filter(|i| string(i, tags::VALUE_TYPE) == "TEXT")
            .collect();
        assert_eq!(previous.len(), 1);
        assert_eq!(string(previous[0], tags::TEXT_VALUE), "nodule-4");
        let props = items(previous[0]);
        assert_eq!(
            value_code(one(&props, names::CHANGE)),
            ("resolved".into(), "99PULMO".into())
        );
        assert_eq!(number(one(&props, codes::DIAMETER)), (6.0, "mm".into()));
        assert_eq!(number(one(&props, codes::VOLUME)), (113.0, "mm3".into()));
        assert_eq!(
            string(one(&props, codes::TRACKING_UID), tags::UID),
            "2.25.4"
        );
    }

    #[test]
    fn a_finding_carries_its_change_its_prior_and_its_growth() {
        let obj = sr_items(&followup_report(RegistrationStatus::Ok));
        let all = items(&obj);
        let group = one(&all, codes::GROUP);
        let in_group = items(group);
        let change = one(&in_group, names::CHANGE);
        assert_eq!(value_code(change), ("15454001".into(), "SCT".into()));
        let previous = one(&items(change), names::PREVIOUS_FINDING);
        assert_eq!(string(previous, tags::TEXT_VALUE), "nodule-3");
        let prior_values = items(previous);
        assert_eq!(
            number(one(&prior_values, codes::DIAMETER)),
            (5.0, "mm".into())
        );
        assert_eq!(
            number(one(&prior_values, codes::VOLUME)),
            (65.0, "mm3".into())
        );
        // The group's own measurements stay direct children; the prior's hang below.
        let direct: Vec<_> = children(group).iter().collect();
        assert_eq!(number(one(&direct, codes::DIAMETER)), (8.0, "mm".into()));
        assert_eq!(
            number(one(&direct, names::DIFFERENCE_IN_SIZE)),
            (3.0, "mm".into())
        );
        let up = report_followup();
        assert_eq!(
            number(one(&direct, names::VOLUME_CHANGE)),
            (up.volume_change_percent.unwrap(), "%".into())
        );
        let (days, unit) = number(one(&direct, names::DOUBLING_TIME));
        assert_eq!((Some(days), unit.as_str()), (up.volume_doubling_days, "d"));
        assert!(days > 150.0 && days < 200.0, "{days}");
        let lung_rads = one(&direct, codes::LUNG_RADS);
        let basis: Vec<_> = children(lung_rads).iter().collect();
        assert_eq!(
            value_code(one(&basis, names::COMPARISON_DONE)),
            ("373066001".into(), "SCT".into())
        );
        assert_eq!(
            string(one(&basis, names::LUNG_RADS_RULE), tags::TEXT_VALUE),
            "solid, growing, under 8 mm: 4A"
        );
    }

    fn report_followup() -> FollowUp {
        followup_report(RegistrationStatus::Ok).findings[0]
            .followup
            .clone()
            .unwrap()
    }

    #[test]
    fn a_new_nodule_has_no_prior_and_no_growth() {
        let mut report = followup_report(RegistrationStatus::Ok);
        report.findings[0].followup = Some(FollowUp::new_nodule());
        let obj = sr_items(&report);
        let all = items(&obj);
        let group = one(&all, codes::GROUP);
        let in_group = items(group);
        let change = one(&in_group, names::CHANGE);
        assert_eq!(value_code(change), ("129721008".into(), "SCT".into()));
        assert!(children(change).is_empty());
        for absent in [
            names::DIFFERENCE_IN_SIZE,
            names::VOLUME_CHANGE,
            names::DOUBLING_TIME,
        ] {
            assert!(named(&in_group, absent).is_empty(), "{}", absent.2);
        }
    }

    #[test]
    fn a_failed_registration_says_so_and_compares_no_finding() {
        let obj = sr_items(&followup_report(RegistrationStatus::Failed));
        let all = items(&obj);
        let done = one(&all, names::COMPARISON_DONE);
        assert_eq!(value_code(done), ("373067005".into(), "SCT".into()));
        let text = string(one(&items(done), names::REGISTRATION), tags::TEXT_VALUE);
        assert_eq!(text, "lung-surface-icp-affine failed: too little lung");
        assert!(named(&all, names::CHANGE).is_empty());
    }

    #[test]
    fn without_a_prior_the_sr_has_no_comparison_content() {
        let (report, _) = analysis();
        let with = sr_items(&followup_report(RegistrationStatus::Ok));
        let without = sr_items(&report);
        let all = items(&without);
        for absent in [
            names::QUALITATIVE_EVALUATIONS,
            names::COMPARISON_DONE,
            names::CHANGE,
            names::PREVIOUS_FINDING,
            names::LUNG_RADS_RULE,
        ] {
            assert!(named(&all, absent).is_empty(), "{}", absent.2);
        }
        assert!(children(one(&all, codes::LUNG_RADS)).is_empty());
        // The root keeps its children; the comparison adds one container at the end.
        assert_eq!(children(&with).len(), children(&without).len() + 1);
    }

    #[test]
    fn change_classes_use_the_chest_temporal_difference_codes() {
        assert_eq!(change_code(Change::Growing).0, "15454001");
        assert_eq!(change_code(Change::Stable).0, "129723006");
        assert_eq!(change_code(Change::Shrinking).0, "19776001");
        assert_eq!(change_code(Change::New).0, "129721008");
    }
}
