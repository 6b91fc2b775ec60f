//! HTTPS to a store behind a private certificate authority (MinIO and Ceph
//! deployments often have one): the roots of a PEM bundle replace the system's,
//! as `AWS_CA_BUNDLE` does for the AWS CLI. The Rust SDK does not read the
//! variable itself, so chute builds the SDK's HTTP client with those roots.
//!
//! Each certificate is checked here before the SDK sees it: the SDK's client
//! treats an unparsable certificate as a bug and panics, and one odd entry in a
//! distribution's bundle must not take chute down. The client still speaks plain
//! HTTP to `http://` endpoints.

use std::path::Path;

use aws_sdk_s3::config::SharedHttpClient;
use aws_smithy_http_client::tls::rustls_provider::CryptoMode;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::StoreError;

const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const END: &str = "-----END CERTIFICATE-----";

/// The certificates of a PEM bundle that can serve as trust anchors, each as
/// its own PEM block.
#[derive(Debug)]
pub(crate) struct CaBundle {
    pub(crate) certificates: Vec<String>,
    /// Blocks that were not usable certificates (skipped with a warning).
    pub(crate) skipped: usize,
}

impl CaBundle {
    pub(crate) fn load(path: &Path) -> Result<CaBundle, StoreError> {
        let bytes = std::fs::read(path).map_err(|e| {
            StoreError::Config(format!(
                "cannot read the CA bundle {} (--ca-bundle / AWS_CA_BUNDLE): {e}",
                path.display()
            ))
        })?;
        let text = String::from_utf8_lossy(&bytes);
        let bundle = CaBundle::parse(&text);
        if bundle.certificates.is_empty() {
            return Err(StoreError::Config(format!(
                "the CA bundle {} (--ca-bundle / AWS_CA_BUNDLE) holds no usable PEM certificate: \
                 give a file of '{BEGIN}' blocks, such as the CA's certificate",
                path.display()
            )));
        }
        if bundle.skipped > 0 {
            tracing::warn!(
                bundle = %path.display(),
                skipped = bundle.skipped,
                "CA bundle entries that are not usable certificates were skipped"
            );
        }
        Ok(bundle)
    }

    pub(crate) fn parse(text: &str) -> CaBundle {
        let mut certificates = Vec::new();
        let mut skipped = 0;
        let mut rest = text;
        while let Some(start) = rest.find(BEGIN) {
            let after = &rest[start..];
            let Some(end) = after.find(END) else {
                skipped += 1;
                break;
            };
            let block = &after[..end + END.len()];
            if usable_anchor(block) {
                certificates.push(format!("{block}\n"));
            } else {
                skipped += 1;
            }
            rest = &after[end + END.len()..];
        }
        CaBundle {
            certificates,
            skipped,
        }
    }

    /// An HTTPS-or-HTTP client that trusts exactly these roots.
    pub(crate) fn http_client(&self) -> Result<SharedHttpClient, StoreError> {
        let mut trust = TrustStore::empty().with_native_roots(false);
        for cert in &self.certificates {
            trust.add_pem_certificate(cert.as_bytes());
        }
        let context = TlsContext::builder()
            .with_trust_store(trust)
            .build()
            .map_err(|e| {
                StoreError::Config(format!("cannot set up TLS with the CA bundle: {e}"))
            })?;
        Ok(aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
            .tls_context(context)
            .build_https())
    }
}

/// Whether the SDK's client will accept this PEM block as a root: exactly the
/// checks it makes itself (PEM decoding, then trust-anchor parsing).
fn usable_anchor(block: &str) -> bool {
    let Ok(ders) = CertificateDer::pem_slice_iter(block.as_bytes()).collect::<Result<Vec<_>, _>>()
    else {
        return false;
    };
    let mut roots = rustls::RootCertStore::empty();
    !ders.is_empty() && ders.into_iter().all(|der| roots.add(der).is_ok())
}

/// Whether a connection failed because the server's certificate is not trusted
/// (as opposed to the server being down), judging by the TLS library's words.
pub(crate) fn untrusted_certificate(detail: &str) -> bool {
    let d = detail.to_ascii_lowercase();
    d.contains("invalid peer certificate")
        || d.contains("unknownissuer")
        || d.contains("unknown issuer")
        || d.contains("certificate verify failed")
        || d.contains("self signed certificate")
        || d.contains("self-signed certificate")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_that_are_not_certificates_are_skipped() {
        let text = format!(
            "# comment\n{BEGIN}\nbm90IGEgY2VydGlmaWNhdGU=\n{END}\ntrailing\n{BEGIN}\nunterminated"
        );
        let b = CaBundle::parse(&text);
        assert!(b.certificates.is_empty());
        assert_eq!(b.skipped, 2);
    }

    #[test]
    fn untrusted_certificate_words() {
        assert!(untrusted_certificate(
            "io error: invalid peer certificate: UnknownIssuer"
        ));
        assert!(!untrusted_certificate("Connection refused (os error 111)"));
    }
}
