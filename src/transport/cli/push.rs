//! `pulmo serve`'s options for pushing results back: the PACS's STOW-RS URL and its
//! credentials, its Storage SCP (C-STORE), a webhook, and the retry policy; checked once
//! into a `PushConfig`.

use std::time::Duration;

use anyhow::{bail, ensure, Context};
use clap::Args;

use crate::service::priors::PriorsConfig;
use crate::service::{Auth, Destination, DimseDestination, PushConfig};

/// Where results go once a job is done.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// DICOMweb base URL of the PACS that receives each job's SR, SEG and key images
    /// (STOW-RS to `<URL>/studies`), for example `http://orthanc:8042/dicom-web`.
    #[arg(long, env = "PULMO_PUSH_URL")]
    pub push_url: Option<String>,
    /// User for HTTP basic authentication to the PACS (with --push-password).
    #[arg(long, env = "PULMO_PUSH_USER")]
    pub push_user: Option<String>,
    /// Password for HTTP basic authentication to the PACS.
    #[arg(long, env = "PULMO_PUSH_PASSWORD", hide_env_values = true)]
    pub push_password: Option<String>,
    /// Bearer token for the PACS (instead of basic authentication).
    #[arg(long, env = "PULMO_PUSH_TOKEN", hide_env_values = true)]
    pub push_token: Option<String>,
    /// The PACS's Storage SCP that receives each job's SR, SEG and key images by C-STORE,
    /// as AET@HOST:PORT (called with --ae-title as the calling AE title).
    #[arg(long, env = "PULMO_PUSH_DIMSE")]
    pub push_dimse: Option<pulmo_dimse::scu::Destination>,
    /// URL that receives each job's JSON report (POST, application/json).
    #[arg(long, env = "PULMO_WEBHOOK_URL")]
    pub webhook_url: Option<String>,
    /// Attempts per push before it is given up (dead).
    #[arg(long, env = "PULMO_PUSH_MAX_ATTEMPTS", default_value_t = 8)]
    pub push_max_attempts: u32,
    /// Wait after the first failed attempt, in seconds; it doubles with each further one.
    #[arg(long, default_value_t = 5.0)]
    pub push_backoff_seconds: f64,
    /// Longest wait between attempts, in seconds.
    #[arg(long, default_value_t = 600.0)]
    pub push_backoff_cap_seconds: f64,
    /// How long one attempt may take, in seconds.
    #[arg(long, default_value_t = 300.0)]
    pub push_timeout_seconds: f64,
}

impl PushArgs {
    /// The checked configuration; C-STORE pushes call with `ae_title`.
    pub fn config(&self, ae_title: &str) -> anyhow::Result<PushConfig> {
        ensure!(
            self.push_max_attempts >= 1,
            "--push-max-attempts must be at least 1"
        );
        let stow = match &self.push_url {
            Some(url) => Some(Destination {
                url: checked_url(url, "--push-url")?,
                auth: self.auth()?,
            }),
            None => None,
        };
        let webhook = match &self.webhook_url {
            Some(url) => Some(Destination {
                url: checked_url(url, "--webhook-url")?,
                auth: Auth::None,
            }),
            None => None,
        };
        let dimse = self.push_dimse.clone().map(|destination| DimseDestination {
            destination,
            calling_ae_title: ae_title.trim().to_owned(),
        });
        Ok(PushConfig {
            stow,
            webhook,
            dimse,
            max_attempts: self.push_max_attempts,
            backoff: seconds(self.push_backoff_seconds, "--push-backoff-seconds", true)?,
            backoff_cap: seconds(
                self.push_backoff_cap_seconds,
                "--push-backoff-cap-seconds",
                true,
            )?,
            timeout: seconds(self.push_timeout_seconds, "--push-timeout-seconds", false)?,
        })
    }

    fn auth(&self) -> anyhow::Result<Auth> {
        auth(
            &self.push_user,
            &self.push_password,
            &self.push_token,
            "--push",
        )
    }
}

/// Where a patient's prior studies are looked for when none was analysed here.
#[derive(Debug, Args)]
pub struct PriorsArgs {
    /// DICOMweb base URL of the PACS asked for a patient's earlier CT study when pulmo has
    /// analysed none (QIDO-RS, then WADO-RS to retrieve it), for example
    /// `http://orthanc:8042/dicom-web`. The retrieved prior is stored and analysed.
    #[arg(long, env = "PULMO_PRIORS_FROM")]
    pub priors_from: Option<String>,
    /// User for HTTP basic authentication to it (with --priors-password).
    #[arg(long, env = "PULMO_PRIORS_USER")]
    pub priors_user: Option<String>,
    /// Password for HTTP basic authentication to it.
    #[arg(long, env = "PULMO_PRIORS_PASSWORD", hide_env_values = true)]
    pub priors_password: Option<String>,
    /// Bearer token for it (instead of basic authentication).
    #[arg(long, env = "PULMO_PRIORS_TOKEN", hide_env_values = true)]
    pub priors_token: Option<String>,
    /// How long one request to it (a search, or retrieving a whole study) may take, in seconds.
    #[arg(long, default_value_t = 600.0)]
    pub priors_timeout_seconds: f64,
}

impl PriorsArgs {
    /// The checked configuration; none without --priors-from.
    pub fn config(&self) -> anyhow::Result<Option<PriorsConfig>> {
        let Some(url) = &self.priors_from else {
            ensure!(
                self.priors_user.is_none()
                    && self.priors_password.is_none()
                    && self.priors_token.is_none(),
                "--priors-user, --priors-password and --priors-token need --priors-from"
            );
            return Ok(None);
        };
        Ok(Some(PriorsConfig {
            source: Destination {
                url: checked_url(url, "--priors-from")?,
                auth: auth(
                    &self.priors_user,
                    &self.priors_password,
                    &self.priors_token,
                    "--priors",
                )?,
            },
            timeout: seconds(
                self.priors_timeout_seconds,
                "--priors-timeout-seconds",
                false,
            )?,
        }))
    }
}

/// The credentials of `{flag}-user`, `{flag}-password` and `{flag}-token`.
fn auth(
    user: &Option<String>,
    password: &Option<String>,
    token: &Option<String>,
    flag: &str,
) -> anyhow::Result<Auth> {
    match (user, password, token) {
        (None, None, None) => Ok(Auth::None),
        (Some(user), Some(password), None) => Ok(Auth::Basic {
            user: user.clone(),
            password: password.clone(),
        }),
        (None, None, Some(token)) => Ok(Auth::Bearer(token.clone())),
        (_, _, Some(_)) => bail!("{flag}-token cannot be combined with {flag}-user"),
        _ => bail!("{flag}-user and {flag}-password go together"),
    }
}

/// An `http` or `https` URL; no query or fragment (paths are appended to it).
fn checked_url(text: &str, flag: &str) -> anyhow::Result<String> {
    let url = reqwest::Url::parse(text).with_context(|| format!("{flag} is not a URL"))?;
    ensure!(
        matches!(url.scheme(), "http" | "https"),
        "{flag} must be an http or https URL"
    );
    ensure!(
        url.query().is_none() && url.fragment().is_none(),
        "{flag} must not have a query or fragment"
    );
    Ok(text.trim_end_matches('/').to_owned())
}

/// A duration from a flag's seconds; zero only where `zero_ok`.
fn seconds(value: f64, flag: &str, zero_ok: bool) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| zero_ok || !d.is_zero())
        .with_context(|| format!("{flag} must be a positive number of seconds, not {value}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        push: PushArgs,
    }

    fn config(args: &[&str]) -> anyhow::Result<PushConfig> {
        Cli::try_parse_from([&["pulmo"], args].concat())?
            .push
            .config("PULMO")
    }

    #[test]
    fn basic_auth_needs_both_halves_and_excludes_a_token() {
        let url = ["--push-url", "http://pacs:8042/dicom-web/"];
        let ok = config(&[&url[..], &["--push-user", "u", "--push-password", "p"]].concat());
        let stow = ok.unwrap().stow.unwrap();
        assert_eq!(stow.url, "http://pacs:8042/dicom-web");
        assert!(matches!(stow.auth, Auth::Basic { .. }));
        assert!(config(&[&url[..], &["--push-user", "u"]].concat()).is_err());
        let both = [&url[..], &["--push-user", "u", "--push-token", "t"]].concat();
        assert!(config(&both).is_err());
    }

    #[test]
    fn urls_must_be_http() {
        assert!(config(&["--push-url", "ftp://pacs/"]).is_err());
        assert!(config(&["--webhook-url", "not a url"]).is_err());
        assert!(config(&[]).unwrap().targets().is_empty());
    }

    #[test]
    fn a_storage_scp_is_aet_at_host_colon_port() {
        let dimse = config(&["--push-dimse", "ORTHANC@127.0.0.1:4242"])
            .unwrap()
            .dimse
            .unwrap();
        assert_eq!(dimse.destination.to_string(), "ORTHANC@127.0.0.1:4242");
        assert_eq!(dimse.calling_ae_title, "PULMO");
        assert!(config(&["--push-dimse", "127.0.0.1:4242"]).is_err());
    }
}
