//! Writing results in input order: JSON lines (the `clip-worker encode`/`rank` format) or a
//! `.npy` matrix (float32 `[N, D]`, little-endian, format version 1.0).

use super::lines;
use crate::engine::{Embedded, Ranked};
use crate::error::DocError;
use std::io::{self, Write};

/// Where encode results go.
pub(crate) trait EncodeSink {
    fn push(&mut self, id: &str, result: &Result<Embedded, DocError>) -> io::Result<()>;
    fn finish(&mut self) -> io::Result<()>;
}

/// `{"id","modality","embedding"}` / `{"id","error"}` lines.
pub(crate) struct JsonlEncode<W: Write>(pub W);

impl<W: Write> EncodeSink for JsonlEncode<W> {
    fn push(&mut self, id: &str, result: &Result<Embedded, DocError>) -> io::Result<()> {
        writeln!(self.0, "{}", lines::encode_line(id, result))
    }
    fn finish(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// One rank line per root.
pub(crate) fn write_rank_line(
    out: &mut impl Write,
    id: &str,
    match_ids: &[String],
    result: &Result<Ranked, DocError>,
) -> io::Result<()> {
    writeln!(out, "{}", lines::rank_line(id, match_ids, result))
}

/// A `.npy` writer for `rows` embeddings, streamed: the header is written once the dimension is
/// known (at the first embedding), rows of documents that failed are NaN.
pub(crate) struct NpyEncode<W: Write> {
    out: W,
    rows: usize,
    dim: Option<usize>,
    /// Failed rows seen before the dimension was known.
    pending_failed: usize,
    written: usize,
}

impl<W: Write> NpyEncode<W> {
    pub(crate) fn new(out: W, rows: usize) -> Self {
        NpyEncode {
            out,
            rows,
            dim: None,
            pending_failed: 0,
            written: 0,
        }
    }

    fn nan_row(&mut self, dim: usize) -> io::Result<()> {
        let row: Vec<u8> = std::iter::repeat_n(f32::NAN.to_le_bytes(), dim)
            .flatten()
            .collect();
        self.out.write_all(&row)?;
        self.written += 1;
        Ok(())
    }

    fn start(&mut self, dim: usize) -> io::Result<()> {
        self.out.write_all(&npy_header(self.rows, dim))?;
        self.dim = Some(dim);
        for _ in 0..std::mem::take(&mut self.pending_failed) {
            self.nan_row(dim)?;
        }
        Ok(())
    }
}

impl<W: Write> EncodeSink for NpyEncode<W> {
    fn push(&mut self, _id: &str, result: &Result<Embedded, DocError>) -> io::Result<()> {
        if self.written + self.pending_failed >= self.rows {
            return Err(io::Error::other(
                "more results than rows announced in the .npy header",
            ));
        }
        if let (Ok(e), None) = (result, self.dim) {
            self.start(e.embedding.len())?;
        }
        match (result, self.dim) {
            (Ok(e), Some(d)) if e.embedding.len() == d => {
                let bytes: Vec<u8> = e.embedding.iter().flat_map(|v| v.to_le_bytes()).collect();
                self.out.write_all(&bytes)?;
                self.written += 1;
                Ok(())
            }
            (Ok(e), Some(d)) => Err(io::Error::other(format!(
                "embedding of dimension {} after embeddings of dimension {d}: cannot write one matrix",
                e.embedding.len()
            ))),
            (Err(_), Some(d)) => self.nan_row(d),
            (_, None) => {
                self.pending_failed += 1;
                Ok(())
            }
        }
    }

    fn finish(&mut self) -> io::Result<()> {
        if self.dim.is_none() {
            // Nothing succeeded: an empty [N, 0] matrix is still a valid file.
            self.start(0)?;
        }
        while self.written < self.rows {
            let d = self.dim.unwrap_or(0);
            self.nan_row(d)?;
        }
        self.out.flush()
    }
}

/// The numpy format 1.0 header for a C-ordered little-endian float32 `[rows, dim]` array, padded
/// so the data starts on a 64-byte boundary.
pub(crate) fn npy_header(rows: usize, dim: usize) -> Vec<u8> {
    let mut dict =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dim}), }}");
    let unpadded = 6 + 2 + 2 + dict.len() + 1;
    let pad = (64 - unpadded % 64) % 64;
    dict.extend(std::iter::repeat_n(' ', pad));
    dict.push('\n');
    let mut out = Vec::with_capacity(10 + dict.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    // The dict is a few dozen bytes: it always fits the u16 of format 1.0.
    out.extend_from_slice(&(dict.len().min(u16::MAX as usize) as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::preprocess::input::Modality;

    fn emb(v: &[f32]) -> Result<Embedded, DocError> {
        Ok(Embedded {
            modality: Modality::Text,
            embedding: v.to_vec(),
        })
    }

    #[test]
    fn npy_is_aligned_and_failed_rows_are_nan() {
        let h = npy_header(3, 2);
        assert_eq!(h.len() % 64, 0);
        assert!(h.ends_with(b"\n"));
        let mut buf = Vec::new();
        {
            let mut w = NpyEncode::new(&mut buf, 3);
            w.push("0", &Err(DocError::new(ErrorCode::ImageDecode, "x")))
                .unwrap();
            w.push("1", &emb(&[1.0, 2.0])).unwrap();
            w.push("2", &emb(&[3.0, 4.0])).unwrap();
            w.finish().unwrap();
        }
        let text = String::from_utf8_lossy(&buf[10..h.len()]).to_string();
        assert!(text.contains("'shape': (3, 2)"), "{text}");
        let data: Vec<f32> = buf[h.len()..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(data.len(), 6);
        assert!(data[0].is_nan() && data[1].is_nan());
        assert_eq!(&data[2..], &[1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn npy_with_no_success_is_empty_matrix() {
        let mut buf = Vec::new();
        let mut w = NpyEncode::new(&mut buf, 1);
        w.push("0", &Err(DocError::new(ErrorCode::ImageDecode, "x")))
            .unwrap();
        w.finish().unwrap();
        assert_eq!(buf.len(), npy_header(1, 0).len());
    }
}
