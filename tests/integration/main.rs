//! pulmo's integration tests: the real binary, real DICOM written by other toolkits,
//! real peers (dcmtk, dicom3tools, Orthanc) and real HTTP over loopback, one module per area.
//! One test binary, so libtorch is linked once (the library crates test without it).

mod analyze;
mod batch;
mod cli;
mod common;
mod dicomweb;
mod dimse;
mod evaluate;
mod evaluate_truth;
mod followup;
mod fuzz_corpus;
mod ingest_malformed;
mod ingest_reference;
mod multinode;
mod orthanc;
mod phantom;
mod report_dicom;
mod review;
mod sample_outputs;
mod schemathesis;
mod serve;
mod serve_hardening;
mod serve_security;
mod train;
mod viewer;
mod workspace;
