//! The `tls.ca` file reduced to what workers need: its certificates, never a key that shares the file.

use std::io::Read;
use std::path::Path;

/// The largest `tls.ca` file read: the file travels to every worker inside
/// `Start`, and a private CA bundle is a few kilobytes (Mozilla's whole root
/// store is about 220 KiB).
pub const MAX_CA_BYTES: u64 = 1024 * 1024;

const BEGIN_CERT: &str = "-----BEGIN CERTIFICATE-----";
const END_CERT: &str = "-----END CERTIFICATE-----";

/// Why a `tls.ca` file cannot be used; each names what was expected.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("`{path}` is larger than {MAX_CA_BYTES} bytes; expected a PEM file of CA certificates")]
    TooLarge { path: String },
    #[error("`{path}` holds no PEM certificate (expected `{BEGIN_CERT}`)")]
    NoCertificate { path: String },
    #[error(
        "`{path}` line {line}: the certificate that starts on line {start} has no `{END_CERT}` before {found}"
    )]
    Unterminated {
        path: String,
        start: usize,
        line: usize,
        found: &'static str,
    },
}

/// Reads the file (bounded) and keeps only its `CERTIFICATE` blocks, so a
/// PEM that also holds the CA's private key does not hand it to every worker.
pub fn read_certificates(path: &Path) -> Result<String, CaError> {
    let shown = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| CaError::Read {
        path: shown.clone(),
        source,
    })?;
    let mut text = String::new();
    file.take(MAX_CA_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|source| CaError::Read {
            path: shown.clone(),
            source,
        })?;
    if text.len() as u64 > MAX_CA_BYTES {
        return Err(CaError::TooLarge { path: shown });
    }
    certificates(&shown, &text)
}

/// The `CERTIFICATE` blocks of a PEM text, in order, each line as written;
/// everything else (keys, other blocks, comments) is left out. A certificate
/// block may hold only base64 lines, so nothing else can ride along inside one.
pub fn certificates(path: &str, text: &str) -> Result<String, CaError> {
    let mut out = String::new();
    let mut open: Option<usize> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let unterminated = |found| CaError::Unterminated {
            path: path.to_owned(),
            start: open.unwrap_or(0) + 1,
            line: i + 1,
            found,
        };
        match open {
            None if line == BEGIN_CERT => {
                open = Some(i);
                out.push_str(BEGIN_CERT);
                out.push('\n');
            }
            None => {}
            Some(_) if line == END_CERT => {
                open = None;
                out.push_str(END_CERT);
                out.push('\n');
            }
            Some(_) if line.starts_with("-----") => return Err(unterminated("another PEM line")),
            Some(_) if !line.bytes().all(is_base64) => {
                return Err(unterminated("a line that is not base64"));
            }
            Some(_) => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    if let Some(start) = open {
        return Err(CaError::Unterminated {
            path: path.to_owned(),
            start: start + 1,
            line: text.lines().count(),
            found: "the end of the file",
        });
    }
    if out.is_empty() {
        return Err(CaError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(out)
}

fn is_base64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ2VydA==\nAAAA\n-----END CERTIFICATE-----\n";
    const KEY: &str =
        "-----BEGIN PRIVATE KEY-----\nU0VDUkVUS0VZTUFURVJJQUw=\n-----END PRIVATE KEY-----\n";

    #[test]
    fn keeps_certificates_and_drops_keys() {
        let text = format!("subject=CN=ca\n{CERT}{KEY}\n{CERT}");
        let kept = certificates("ca.pem", &text).expect("two certificates");
        assert_eq!(kept, format!("{CERT}{CERT}"));
        assert!(!kept.contains("PRIVATE") && !kept.contains("U0VDUkVU"));
    }

    #[test]
    fn refuses_files_without_a_whole_certificate() {
        let e = certificates("ca.pem", KEY).expect_err("no certificate");
        assert!(e.to_string().contains("holds no PEM certificate"), "{e}");
        let e = certificates("ca.pem", &format!("{BEGIN_CERT}\nAAAA\n{KEY}")).expect_err("open");
        assert!(e.to_string().contains("line 3"), "{e}");
        let e = certificates(
            "ca.pem",
            &format!("{BEGIN_CERT}\nnot base64!\n{END_CERT}\n"),
        )
        .expect_err("junk");
        assert!(e.to_string().contains("not base64"), "{e}");
        let e = certificates("ca.pem", BEGIN_CERT).expect_err("cut short");
        assert!(e.to_string().contains("end of the file"), "{e}");
    }
}
