//! The upload form (`--upload`): `POST /folder/` with a `multipart/form-data` body (RFC 7578),
//! as the listing's form sends it. Each file part is written as a `PUT` of its name in that
//! folder would be ([`upload::begin`]: the same name rules, a temporary file renamed into
//! place, no replacing without `--upload-overwrite`); other fields are read and dropped.
//!
//! The body is parsed as it streams: what is held is the delimiter's length of the last
//! piece (a delimiter may straddle two reads) and one part's header block, bounded by
//! [`MAX_PART_HEAD`]. The answer is 303 back to the folder, whose listing then shows the
//! files; a part that is refused (a name taken, a dotfile) makes the answer its refusal, the
//! files before it kept and the parts after it not written.

use memchr::memmem;

use crate::protocol::http::message::{error_response, BodySink, Response};

use super::path::encode_segment;
use super::upload::{self, UploadConfig};

/// The longest header block of one part (a file name, a content type); longer is 400.
pub const MAX_PART_HEAD: usize = 16 * 1024;

/// Where the parser is in the body.
enum State {
    /// Before the first delimiter (RFC 2046 §5.1.1: a preamble is ignored).
    Preamble,
    /// After a delimiter: `--` (the end) or CRLF and a part's headers.
    AfterDelimiter,
    /// Collecting a part's header block.
    Head,
    /// A part's content, written to the upload (a file part) or dropped.
    Content(Option<upload::Upload>),
    /// After the closing delimiter (an epilogue is ignored).
    Done,
    /// A refusal was decided: the rest of the body is read and dropped.
    Failed(Response),
}

/// A form upload into one folder.
pub struct FormUpload {
    root: std::path::PathBuf,
    cfg: UploadConfig,
    show_dotfiles: bool,
    /// The folder's URL path, encoded, ending in `/`.
    folder: String,
    /// `\r\n--BOUNDARY`: what ends a part's content (the first delimiter has no CRLF before
    /// it, so the body is read as if one preceded it).
    delimiter: Vec<u8>,
    held: Vec<u8>,
    state: State,
    files: usize,
}

impl std::fmt::Debug for FormUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FormUpload")
    }
}

/// The boundary of a `multipart/form-data` content type, if it is one (RFC 7578 §4.1).
pub fn boundary(content_type: &str) -> Option<String> {
    let (kind, params) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    let b = params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_string())
    })?;
    // RFC 2046 §5.1.1: 1 to 70 characters.
    (1..=70).contains(&b.len()).then_some(b)
}

impl FormUpload {
    /// An upload of the form's files into `folder` (its encoded URL path, ending in `/`).
    pub fn new(
        root: &std::path::Path,
        cfg: &UploadConfig,
        show_dotfiles: bool,
        folder: String,
        boundary: &str,
    ) -> FormUpload {
        FormUpload {
            root: root.to_path_buf(),
            cfg: cfg.clone(),
            show_dotfiles,
            folder,
            delimiter: format!("\r\n--{boundary}").into_bytes(),
            held: b"\r\n".to_vec(),
            state: State::Preamble,
            files: 0,
        }
    }

    /// Parse what is held as far as it goes.
    fn run(&mut self) {
        loop {
            match std::mem::replace(&mut self.state, State::Done) {
                State::Preamble => match memmem::find(&self.held, &self.delimiter) {
                    Some(i) => {
                        self.held.drain(..i + self.delimiter.len());
                        self.state = State::AfterDelimiter;
                    }
                    None => {
                        self.keep_tail();
                        self.state = State::Preamble;
                        return;
                    }
                },
                State::AfterDelimiter => {
                    if self.held.len() < 2 {
                        self.state = State::AfterDelimiter;
                        return;
                    }
                    if self.held.starts_with(b"--") {
                        self.held.clear();
                        self.state = State::Done;
                        return;
                    }
                    // Transport padding (spaces, tabs) may follow a delimiter, then CRLF.
                    match memmem::find(&self.held, b"\r\n") {
                        Some(i) if self.held[..i].iter().all(|&b| b == b' ' || b == b'\t') => {
                            self.held.drain(..i + 2);
                            self.state = State::Head;
                        }
                        Some(_) => return self.fail(400, "The form's boundary is broken."),
                        None if self.held.len() > 256 => {
                            return self.fail(400, "The form's boundary is broken.")
                        }
                        None => {
                            self.state = State::AfterDelimiter;
                            return;
                        }
                    }
                }
                State::Head => match memmem::find(&self.held, b"\r\n\r\n") {
                    Some(i) => {
                        let head = String::from_utf8_lossy(&self.held[..i]).into_owned();
                        self.held.drain(..i + 4);
                        match self.open_part(&head) {
                            Ok(up) => self.state = State::Content(up),
                            Err(r) => {
                                self.held.clear();
                                self.state = State::Failed(*r);
                                return;
                            }
                        }
                    }
                    None if self.held.len() > MAX_PART_HEAD => {
                        return self.fail(400, "A part of the form has too long a head.")
                    }
                    None => {
                        self.state = State::Head;
                        return;
                    }
                },
                State::Content(mut up) => match memmem::find(&self.held, &self.delimiter) {
                    Some(i) => {
                        if let Some(u) = &mut up {
                            u.write(&self.held[..i]);
                        }
                        self.held.drain(..i + self.delimiter.len());
                        if let Some(u) = up {
                            let answer = Box::new(u).finish();
                            if !(200..300).contains(&answer.status) {
                                self.held.clear();
                                self.state = State::Failed(answer);
                                return;
                            }
                            self.files += 1;
                        }
                        self.state = State::AfterDelimiter;
                    }
                    None => {
                        // All but what could begin a delimiter goes out now.
                        let keep = self.delimiter.len() - 1;
                        if self.held.len() > keep {
                            let out = self.held.len() - keep;
                            if let Some(u) = &mut up {
                                u.write(&self.held[..out]);
                            }
                            self.held.drain(..out);
                        }
                        self.state = State::Content(up);
                        return;
                    }
                },
                s @ (State::Done | State::Failed(_)) => {
                    self.held.clear();
                    self.state = s;
                    return;
                }
            }
        }
    }

    /// Keep only what could begin a delimiter.
    fn keep_tail(&mut self) {
        let keep = self.delimiter.len() - 1;
        if self.held.len() > keep {
            self.held.drain(..self.held.len() - keep);
        }
    }

    fn fail(&mut self, status: u16, why: &str) {
        self.held.clear();
        self.state = State::Failed(error_response(status, why));
    }

    /// A part's headers: the upload its file goes to, None for a field that is not a file
    /// (or a file input left empty), or the refusal.
    fn open_part(&self, head: &str) -> Result<Option<upload::Upload>, Box<Response>> {
        let disposition = head.split("\r\n").find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-disposition")
                .then_some(v)
        });
        let Some(name) = disposition.and_then(filename) else {
            return Ok(None);
        };
        // Some browsers sent the whole client path: the name is its last part.
        let name = name.rsplit(['/', '\\']).next().unwrap_or("");
        if name.is_empty() {
            return Ok(None);
        }
        let path = format!("{}{}", self.folder, encode_segment(name.as_bytes()));
        match upload::begin(&self.root, &self.cfg, &path, self.show_dotfiles) {
            Some(Ok(up)) => Ok(Some(up)),
            Some(Err(r)) => Err(Box::new(r)),
            None => Err(Box::new(error_response(
                405,
                "Uploads are not accepted in this folder.",
            ))),
        }
    }
}

/// `filename="..."` of a Content-Disposition value (RFC 7578 §4.2: browsers send the name
/// as UTF-8 in the quoted string, with `"` as `%22` and line breaks as `%0A`/`%0D`).
fn filename(v: &str) -> Option<String> {
    let mut rest = v;
    while let Some(i) = rest.find("filename=") {
        let before = rest[..i].trim_end();
        let after = &rest[i + "filename=".len()..];
        if before.is_empty() || before.ends_with(';') {
            let value = match after.strip_prefix('"') {
                Some(q) => q.split('"').next().unwrap_or(""),
                None => after.split(';').next().unwrap_or("").trim(),
            };
            let value = value
                .replace("%22", "\"")
                .replace("%0A", "\n")
                .replace("%0D", "\r");
            return Some(value);
        }
        rest = after;
    }
    None
}

impl BodySink for FormUpload {
    fn write(&mut self, data: &[u8]) {
        if matches!(self.state, State::Done | State::Failed(_)) {
            return;
        }
        self.held.extend_from_slice(data);
        self.run();
    }

    fn finish(mut self: Box<Self>) -> Response {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Failed(r) => r,
            State::Done => Response::new(303)
                .header("Location", self.folder.clone())
                .header("Content-Type", "text/plain; charset=utf-8")
                .with_body(crate::protocol::http::Body::Bytes(bytes::Bytes::from(
                    format!(
                        "Uploaded {} file{} to {}\n",
                        self.files,
                        if self.files == 1 { "" } else { "s" },
                        self.folder
                    ),
                ))),
            _ => error_response(400, "The form ended before its closing boundary."),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("tincan-form-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("in")).unwrap();
        std::fs::canonicalize(d).unwrap()
    }

    const B: &str = "----tincanB0undary";

    fn form(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
        let mut body = b"preamble to ignore\r\n".to_vec();
        for (name, file, data) in parts {
            body.extend_from_slice(format!("--{B}\r\n").as_bytes());
            let disp = match file {
                Some(f) => format!("form-data; name=\"{name}\"; filename=\"{f}\""),
                None => format!("form-data; name=\"{name}\""),
            };
            body.extend_from_slice(
                format!(
                    "Content-Disposition: {disp}\r\nContent-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            );
            body.extend_from_slice(data);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{B}--\r\nepilogue").as_bytes());
        body
    }

    fn post(root: &std::path::Path, body: &[u8], piece: usize) -> Response {
        let cfg = UploadConfig::new(&["/in".into()], false).unwrap();
        let mut f: Box<dyn BodySink> =
            Box::new(FormUpload::new(root, &cfg, false, "/in/".into(), B));
        for chunk in body.chunks(piece) {
            f.write(chunk);
        }
        f.finish()
    }

    #[test]
    fn files_of_a_form_land_whole_however_the_body_is_cut() {
        // Data that holds most of a delimiter, and CRLFs, must come through as it is.
        let tricky = format!("a\r\n--{}\r\nb\r\n\r\n", &B[..B.len() - 1]).into_bytes();
        let body = form(&[
            ("note", None, b"a text field"),
            ("file", Some("one.txt"), b"first"),
            ("file", Some("C:\\Users\\me\\two.bin"), &tricky),
            ("file", Some(""), b""),
            ("file", Some("empty.txt"), b""),
        ]);
        for piece in [1, 7, 64, body.len()] {
            let root = root(&format!("ok{piece}"));
            let r = post(&root, &body, piece);
            assert_eq!(r.status, 303, "piece {piece}");
            assert_eq!(r.get_header("location"), Some("/in/"));
            assert_eq!(std::fs::read(root.join("in/one.txt")).unwrap(), b"first");
            assert_eq!(std::fs::read(root.join("in/two.bin")).unwrap(), tricky);
            assert_eq!(std::fs::read(root.join("in/empty.txt")).unwrap(), b"");
            // Nothing else: no field written, no temporary file left.
            assert_eq!(std::fs::read_dir(root.join("in")).unwrap().count(), 3);
            let _ = std::fs::remove_dir_all(&root);
        }
    }

    #[test]
    fn a_refused_part_answers_and_a_cut_form_leaves_nothing() {
        let root = root("refused");
        std::fs::write(root.join("in/taken.txt"), "old").unwrap();
        let body = form(&[
            ("file", Some("first.txt"), b"kept"),
            ("file", Some("taken.txt"), b"new"),
            ("file", Some("after.txt"), b"not written"),
        ]);
        assert_eq!(post(&root, &body, 5).status, 409);
        assert_eq!(std::fs::read(root.join("in/taken.txt")).unwrap(), b"old");
        assert!(root.join("in/first.txt").exists());
        assert!(!root.join("in/after.txt").exists());
        let hidden = form(&[("file", Some(".htaccess"), b"x")]);
        assert_eq!(post(&root, &hidden, 100).status, 403);
        // The body stops inside a file: 400, and its temporary file is gone.
        let cut = form(&[("file", Some("cut.bin"), &[1u8; 5000])]);
        assert_eq!(post(&root, &cut[..3000], 512).status, 400);
        let names: Vec<_> = std::fs::read_dir(root.join("in"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        // A header block past its ceiling.
        let mut long = format!("--{B}\r\nX: ").into_bytes();
        long.extend(vec![b'a'; MAX_PART_HEAD + 10]);
        assert_eq!(post(&root, &long, 4096).status, 400);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn the_boundary_comes_from_a_form_data_content_type() {
        assert_eq!(
            boundary("multipart/form-data; boundary=----WebKitFormBoundaryX1"),
            Some("----WebKitFormBoundaryX1".into())
        );
        assert_eq!(
            boundary("Multipart/Form-Data; charset=x; boundary=\"a b\""),
            Some("a b".into())
        );
        assert_eq!(boundary("multipart/mixed; boundary=x"), None);
        assert_eq!(boundary("multipart/form-data"), None);
        assert_eq!(
            boundary(&format!("multipart/form-data; boundary={}", "x".repeat(71))),
            None
        );
        assert_eq!(
            filename(" form-data; name=\"file\"; filename=\"a %22q%22.txt\""),
            Some("a \"q\".txt".into())
        );
        assert_eq!(filename(" form-data; name=\"filename=x\""), None);
    }
}
