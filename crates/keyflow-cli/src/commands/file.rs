//! `keyflow file encrypt | decrypt | inspect`: streaming file encryption in constant
//! memory (format: docs/file-format.md). `-` means stdin / stdout.
//!
//! Output files are written to a temporary file in the destination's directory and
//! renamed into place only once everything succeeded (for `decrypt`: after the final
//! segment verified), so a failure never leaves anything at `OUT`. On stdout,
//! `decrypt` releases plaintext one verified segment at a time; a failure is reported
//! (exit 1) after the verified prefix was written.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use clap::Subcommand;
use keyflow_kms::keyflow_core::OsRng;
use keyflow_stream::{
    decrypt, encrypt, read_header, Metadata, Opener, Sealer, SeekableDecryptor, StreamError,
};

use super::{open_service, parse_purpose};
use crate::config::Config;
use crate::error::CliError;

/// `keyflow file …`
#[derive(Debug, Subcommand)]
pub enum FileCommand {
    /// Encrypt a file (or stdin) of any size.
    Encrypt {
        /// The file to encrypt (`-` for stdin).
        input: PathBuf,
        /// Where to write the encrypted file (`-` for stdout).
        #[arg(short = 'o', long = "output", value_name = "OUT")]
        output: PathBuf,
        /// Key ring to use (created on first use unless ENCRYPTION_STRICT_MODE=true).
        #[arg(long, default_value = "documents")]
        purpose: String,
        /// File name stored in the encrypted metadata (default: the input's name).
        #[arg(long)]
        name: Option<String>,
        /// MIME type stored in the encrypted metadata.
        #[arg(long)]
        mime: Option<String>,
    },
    /// Decrypt a file; the output appears only after the whole file verified.
    Decrypt {
        /// The encrypted file (`-` for stdin).
        input: PathBuf,
        /// Where to write the plaintext (`-` for stdout).
        #[arg(short = 'o', long = "output", value_name = "OUT")]
        output: PathBuf,
    },
    /// Print the authenticated metadata of an encrypted file as JSON (decrypts nothing
    /// but the header; for a regular file also authenticates the final segment, so the
    /// size is verified).
    Inspect {
        /// The encrypted file (`-` for stdin).
        input: PathBuf,
    },
}

/// Runs a `keyflow file` command.
pub async fn run(config: &Config, cmd: &FileCommand) -> Result<(), CliError> {
    match cmd {
        FileCommand::Encrypt {
            input,
            output,
            purpose,
            name,
            mime,
        } => encrypt_file(config, input, output, purpose, name.clone(), mime.clone()).await,
        FileCommand::Decrypt { input, output } => decrypt_file(config, input, output).await,
        FileCommand::Inspect { input } => inspect(config, input).await,
    }
}

fn is_dash(p: &Path) -> bool {
    p.as_os_str() == "-"
}

/// The input: stdin, or an opened file with its size when it is a regular file.
enum Input {
    Stdin(std::io::StdinLock<'static>),
    File { file: File, size: Option<u64> },
}

impl Input {
    fn open(path: &Path) -> Result<Self, CliError> {
        if is_dash(path) {
            return Ok(Input::Stdin(std::io::stdin().lock()));
        }
        let file = File::open(path)
            .map_err(|e| CliError::Config(format!("cannot open {}: {e}", path.display())))?;
        let meta = file.metadata()?;
        let size = meta.is_file().then_some(meta.len());
        Ok(Input::File { file, size })
    }

    fn size(&self) -> Option<u64> {
        match self {
            Input::Stdin(_) => None,
            Input::File { size, .. } => *size,
        }
    }
}

impl Read for Input {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Input::Stdin(s) => s.read(buf),
            Input::File { file, .. } => file.read(buf),
        }
    }
}

/// The output: stdout, or a temporary file renamed to the destination by `commit`.
/// Dropped without `commit`, the temporary file is deleted.
enum Output {
    Stdout(std::io::StdoutLock<'static>),
    File {
        tmp: tempfile::NamedTempFile,
        dest: PathBuf,
    },
}

impl Output {
    fn create(path: &Path) -> Result<Self, CliError> {
        if is_dash(path) {
            return Ok(Output::Stdout(std::io::stdout().lock()));
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let tmp = tempfile::Builder::new()
            .prefix(".keyflow-")
            .suffix(".partial")
            .tempfile_in(dir)
            .map_err(|e| CliError::Config(format!("cannot write to {}: {e}", dir.display())))?;
        Ok(Output::File {
            tmp,
            dest: path.to_owned(),
        })
    }

    /// Makes the output durable and visible at its destination.
    fn commit(self) -> Result<(), CliError> {
        match self {
            Output::Stdout(mut s) => Ok(s.flush()?),
            Output::File { tmp, dest } => {
                tmp.as_file().sync_all()?;
                tmp.persist(&dest).map_err(|e| {
                    CliError::Config(format!("cannot write {}: {}", dest.display(), e.error))
                })?;
                Ok(())
            }
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Output::Stdout(s) => s.write(buf),
            Output::File { tmp, .. } => tmp.as_file_mut().write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Output::Stdout(s) => s.flush(),
            Output::File { tmp, .. } => tmp.as_file_mut().flush(),
        }
    }
}

/// A caller's bad value (name, MIME type) is a usage error; the rest keeps its kind.
fn stream_error(e: StreamError) -> CliError {
    match e {
        StreamError::Invalid(what) => CliError::Usage(format!("invalid {what}")),
        other => CliError::Stream(other),
    }
}

async fn encrypt_file(
    config: &Config,
    input: &Path,
    output: &Path,
    purpose: &str,
    name: Option<String>,
    mime_type: Option<String>,
) -> Result<(), CliError> {
    let purpose = parse_purpose(purpose)?;
    let mut reader = Input::open(input)?;
    let name = name.or_else(|| {
        (!is_dash(input))
            .then(|| {
                input
                    .file_name()
                    .and_then(|n| n.to_str())
                    .map(str::to_owned)
            })
            .flatten()
    });
    let metadata = Metadata {
        name,
        mime_type,
        size: reader.size(),
    };
    let service = open_service(config).await?;
    let sealer = service
        .ring()
        .with_active_key(&purpose, |dk| Sealer::new(dk, &metadata, &OsRng))
        .await?
        .map_err(stream_error)?;
    service.ring().flush_usage().await?;
    let mut out = Output::create(output)?;
    encrypt(&mut reader, &mut out, sealer).map_err(stream_error)?;
    out.commit()
}

/// Opens `input` and its header under the key the header names: the reader is left
/// at the first segment.
async fn open_file(config: &Config, input: &Path) -> Result<(Input, Opener), CliError> {
    let mut reader = Input::open(input)?;
    let header = read_header(&mut reader).map_err(stream_error)?;
    let service = open_service(config).await?;
    let opener = service
        .ring()
        .with_decrypt_key(header.purpose(), header.key_version(), |dk| header.open(dk))
        .await?
        .map_err(stream_error)?;
    Ok((reader, opener))
}

async fn decrypt_file(config: &Config, input: &Path, output: &Path) -> Result<(), CliError> {
    let (reader, opener) = open_file(config, input).await?;
    let mut out = Output::create(output)?;
    decrypt(reader, &mut out, opener).map_err(stream_error)?;
    out.commit()
}

async fn inspect(config: &Config, input: &Path) -> Result<(), CliError> {
    let (reader, opener) = open_file(config, input).await?;
    let meta = opener.metadata().clone();
    let (purpose, version, segment) = (
        opener.purpose().to_string(),
        opener.key_version().get(),
        opener.segment_size(),
    );
    // A regular file can be checked from its length and final segment: the size is
    // then authenticated even when it was not known at encryption.
    let (size, verified) = match reader {
        Input::File {
            file,
            size: Some(_),
            ..
        } => {
            let s = SeekableDecryptor::new(file, opener).map_err(stream_error)?;
            (Some(s.size()), true)
        }
        _ => (meta.size, false),
    };
    let json = serde_json::json!({
        "format": "keyflow-file-v1",
        "purpose": purpose,
        "keyVersion": version,
        "segmentSize": segment,
        "name": meta.name,
        "mimeType": meta.mime_type,
        "size": size,
        "sizeVerified": verified,
    });
    let text = serde_json::to_string_pretty(&json).map_err(|e| CliError::Config(e.to_string()))?;
    println!("{text}");
    Ok(())
}
