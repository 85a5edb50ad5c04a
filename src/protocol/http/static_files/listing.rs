//! Step 3 (directories without an index file): the listing, as HTML a person is glad to read or
//! as JSON for programs (when `Accept` ranks `application/json` above `text/html`, or with
//! `?format=json` for clients that cannot set headers). Columns name, size and modified, sortable with
//! `?sort=name|size|modified&order=asc|desc` through links in the column headers (no script);
//! `..` first except at the root; directories before files; dotfiles hidden unless shown.
//! Names are HTML-escaped, and links percent-encode every byte outside RFC 3986's unreserved
//! set, so `#`, `%`, `?`, `,`, `[`, `]`, `:`, spaces and non-ASCII names all link correctly.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::protocol::http::message::html_escape;

use super::path::encode_segment;

/// Entries listed at most; beyond this the listing says it was cut short (a directory with a
/// million files must not make a multi-megabyte page per request).
pub const MAX_LISTING_ENTRIES: usize = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink => "symlink",
        }
    }
}

/// One directory entry.
#[derive(Clone, Debug)]
pub struct Entry {
    pub name: Vec<u8>,
    pub kind: Kind,
    /// Links to a directory (a directory, or a symlink to one): linked with a trailing slash.
    pub is_dir: bool,
    pub size: u64,
    pub modified: Option<SystemTime>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    Name,
    Size,
    Modified,
}

/// How the listing is sorted (from the query string).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sort {
    pub key: SortKey,
    pub descending: bool,
}

impl Sort {
    /// `sort=` and `order=` from a query string; anything unknown means name, ascending.
    pub fn from_query(query: Option<&str>) -> Sort {
        let mut sort = Sort {
            key: SortKey::Name,
            descending: false,
        };
        for pair in query.unwrap_or("").split('&') {
            match pair.split_once('=') {
                Some(("sort", "size")) => sort.key = SortKey::Size,
                Some(("sort", "modified")) => sort.key = SortKey::Modified,
                Some(("sort", "name")) => sort.key = SortKey::Name,
                Some(("order", "desc")) => sort.descending = true,
                Some(("order", "asc")) => sort.descending = false,
                _ => {}
            }
        }
        sort
    }
}

/// What [`read`] may reveal: a symlink's target is described (size, time, kind) only if
/// serving it would be allowed, so a listing never leaks facts about files outside the root or
/// about hidden ones.
#[derive(Clone, Copy, Debug)]
pub struct Scope<'a> {
    /// The canonical document root.
    pub root: &'a Path,
    pub show_dotfiles: bool,
    pub follow_symlinks: bool,
}

impl Scope<'_> {
    fn may_describe(&self, link: &Path) -> bool {
        super::path::locate(
            self.root,
            link.strip_prefix(self.root).unwrap_or(link),
            self.follow_symlinks,
            self.show_dotfiles,
        )
        .is_ok()
    }
}

/// Read `dir`'s entries (at most [`MAX_LISTING_ENTRIES`]); the flag says if some were left out.
pub fn read(dir: &Path, scope: Scope<'_>) -> std::io::Result<(Vec<Entry>, bool)> {
    let show_dotfiles = scope.show_dotfiles;
    let mut out = Vec::new();
    let mut truncated = false;
    for ent in fs::read_dir(dir)? {
        let Ok(ent) = ent else { continue };
        let name = ent.file_name().as_bytes().to_vec();
        if !show_dotfiles && name.first() == Some(&b'.') {
            continue;
        }
        if out.len() == MAX_LISTING_ENTRIES {
            truncated = true;
            break;
        }
        // A listing links only to what a click would be served: a name the path rules refuse
        // (a backslash: 400) is left out, and so are links that dangle or lead out of the root
        // (404 and 403).
        if name.contains(&b'\\') {
            continue;
        }
        let Ok(ft) = ent.file_type() else { continue };
        let (kind, meta) = if ft.is_symlink() {
            // Size and time of what the link points at.
            let path = ent.path();
            let meta = if scope.may_describe(&path) {
                fs::metadata(&path).ok()
            } else {
                None
            };
            if meta.is_none() {
                continue;
            }
            (Kind::Symlink, meta)
        } else if ft.is_dir() {
            (Kind::Dir, ent.metadata().ok())
        } else {
            (Kind::File, ent.metadata().ok())
        };
        // Nor to what would be refused: a FIFO, socket or device (403/404), or what this
        // process may not read (a directory it may not search either): 403.
        let Some(m) = &meta else { continue };
        if !(m.is_file() || m.is_dir()) || !crate::sys::may_read(&ent.path(), m.is_dir()) {
            continue;
        }
        let is_dir = m.is_dir();
        out.push(Entry {
            name,
            kind,
            is_dir,
            size: meta.as_ref().filter(|m| !m.is_dir()).map_or(0, |m| m.len()),
            modified: meta.and_then(|m| m.modified().ok()),
        });
    }
    Ok((out, truncated))
}

/// Sort entries: directories first, then by the key (names case-insensitively, ties by bytes).
pub fn sort(entries: &mut [Entry], sort: Sort) {
    entries.sort_by(|a, b| {
        b.is_dir.cmp(&a.is_dir).then_with(|| {
            let by_name = || {
                let (la, lb) = (
                    String::from_utf8_lossy(&a.name).to_lowercase(),
                    String::from_utf8_lossy(&b.name).to_lowercase(),
                );
                la.cmp(&lb).then_with(|| a.name.cmp(&b.name))
            };
            let ord = match sort.key {
                SortKey::Name => by_name(),
                SortKey::Size => a.size.cmp(&b.size).then_with(by_name),
                SortKey::Modified => a.modified.cmp(&b.modified).then_with(by_name),
            };
            if sort.descending {
                ord.reverse()
            } else {
                ord
            }
        })
    });
}

/// The JSON listing: an array of `{name, href, type, size, modified}` (RFC 3339, UTC), sorted
/// like the HTML one. `href` is the entry's URL relative to the listing, percent-encoded (the
/// one way to reach a name that is not UTF-8, which `name` shows with U+FFFD).
pub fn json(entries: &[Entry]) -> String {
    let items: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| {
            let slash = if e.is_dir { "/" } else { "" };
            serde_json::json!({
                "name": String::from_utf8_lossy(&e.name),
                "href": format!("{}{slash}", encode_segment(&e.name)),
                "type": e.kind.as_str(),
                "size": e.size,
                "modified": e.modified.map(rfc3339),
            })
        })
        .collect();
    serde_json::Value::Array(items).to_string()
}

const STYLE: &str = "body{font:15px/1.5 system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#222;background:#fdfdfd}\
h1{font-size:1.3rem;font-weight:600;word-break:break-all}\
table{border-collapse:collapse;width:100%}\
th,td{padding:.3rem .6rem;text-align:left;border-bottom:1px solid #eee}\
th{font-weight:600;border-bottom:2px solid #ddd;white-space:nowrap}\
td.size,th.size{text-align:right;white-space:nowrap}td.modified{white-space:nowrap;color:#555}\
a{color:#0b5cad;text-decoration:none}a:hover{text-decoration:underline}\
tr:hover td{background:#f3f7fb}tr.dir a{font-weight:600}\
footer{margin-top:1rem;color:#777;font-size:.85rem}\
@media (prefers-color-scheme:dark){body{background:#1b1b1b;color:#ddd}a{color:#7ab7ff}th,td{border-color:#333}tr:hover td{background:#262b31}td.modified{color:#aaa}}";

/// The HTML listing of URL path `url_path` (decoded, ending in `/`).
pub fn html(
    url_path: &str,
    entries: &[Entry],
    at_root: bool,
    sort: Sort,
    truncated: bool,
) -> String {
    let title = html_escape(url_path);
    let mut s = String::with_capacity(1024 + entries.len() * 160);
    s.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    s.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    s.push_str(&format!(
        "<title>Index of {title}</title>\n<style>{STYLE}</style>\n</head>\n"
    ));
    s.push_str(&format!(
        "<body>\n<h1>Index of {title}</h1>\n<table>\n<thead><tr>"
    ));
    for (key, label, class) in [
        (SortKey::Name, "Name", "name"),
        (SortKey::Size, "Size", "size"),
        (SortKey::Modified, "Modified", "modified"),
    ] {
        let current = sort.key == key;
        // Clicking the current column flips its order; another column starts ascending.
        let order = if current && !sort.descending {
            "desc"
        } else {
            "asc"
        };
        let arrow = match (current, sort.descending) {
            (false, _) => "",
            (true, false) => " \u{25B2}",
            (true, true) => " \u{25BC}",
        };
        s.push_str(&format!(
            "<th class=\"{class}\"><a href=\"?sort={class}&amp;order={order}\">{label}</a>{arrow}</th>"
        ));
    }
    s.push_str("</tr></thead>\n<tbody>\n");
    if !at_root {
        s.push_str("<tr class=\"dir parent\"><td><a href=\"../\">../</a></td><td class=\"size\">-</td><td class=\"modified\"></td></tr>\n");
    }
    let (mut dirs, mut files) = (0, 0);
    for e in entries {
        let name = String::from_utf8_lossy(&e.name);
        let slash = if e.is_dir { "/" } else { "" };
        let href = encode_segment(&e.name);
        let size = if e.is_dir {
            dirs += 1;
            "-".to_string()
        } else {
            files += 1;
            human_size(e.size)
        };
        let modified = e.modified.map(display_time).unwrap_or_default();
        let class = if e.is_dir { "dir" } else { "file" };
        let link = if e.kind == Kind::Symlink {
            " class=\"symlink\""
        } else {
            ""
        };
        s.push_str(&format!(
            "<tr class=\"{class}\"><td><a{link} href=\"{href}{slash}\">{}{slash}</a></td><td class=\"size\">{size}</td><td class=\"modified\">{modified}</td></tr>\n",
            html_escape(&name)
        ));
    }
    s.push_str("</tbody>\n</table>\n<footer>");
    s.push_str(&format!(
        "{dirs} {}, {files} {}",
        if dirs == 1 {
            "directory"
        } else {
            "directories"
        },
        if files == 1 { "file" } else { "files" }
    ));
    if truncated {
        s.push_str(&format!(
            " (only the first {MAX_LISTING_ENTRIES} entries are listed)"
        ));
    }
    s.push_str(" · served by tincan</footer>\n</body>\n</html>\n");
    s
}

/// `1.5 KiB`-style sizes; bytes below 1 KiB are exact.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// (year, month, day, hour, minute, second) in UTC.
fn civil(t: SystemTime) -> (i64, u32, u32, u32, u32, u32) {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    )
}

/// RFC 3339 in UTC: `2026-11-21T23:13:47Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = civil(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// What the HTML listing shows: `2026-11-21 23:13 UTC` (minutes are enough for people).
fn display_time(t: SystemTime) -> String {
    let (y, mo, d, h, mi, _) = civil(t);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn names(entries: &[Entry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| String::from_utf8_lossy(&e.name).into_owned())
            .collect()
    }

    fn entry(name: &str, is_dir: bool, size: u64, secs: u64) -> Entry {
        Entry {
            name: name.as_bytes().to_vec(),
            kind: if is_dir { Kind::Dir } else { Kind::File },
            is_dir,
            size,
            modified: Some(UNIX_EPOCH + Duration::from_secs(secs)),
        }
    }

    fn sample() -> Vec<Entry> {
        vec![
            entry("b.txt", false, 300, 30),
            entry("A.txt", false, 100, 20),
            entry("zdir", true, 0, 10),
            entry("c.txt", false, 200, 40),
            entry("adir", true, 0, 50),
        ]
    }

    #[test]
    fn directories_come_first_then_the_chosen_order() {
        let table: &[(&str, &[&str])] = &[
            ("", &["adir", "zdir", "A.txt", "b.txt", "c.txt"]),
            (
                "sort=name&order=desc",
                &["zdir", "adir", "c.txt", "b.txt", "A.txt"],
            ),
            ("sort=size", &["adir", "zdir", "A.txt", "c.txt", "b.txt"]),
            (
                "sort=size&order=desc",
                &["zdir", "adir", "b.txt", "c.txt", "A.txt"],
            ),
            (
                "order=asc&sort=modified",
                &["zdir", "adir", "A.txt", "b.txt", "c.txt"],
            ),
            (
                "sort=modified&order=desc",
                &["adir", "zdir", "c.txt", "b.txt", "A.txt"],
            ),
            (
                "sort=bogus&order=sideways",
                &["adir", "zdir", "A.txt", "b.txt", "c.txt"],
            ),
        ];
        for (q, want) in table {
            let mut e = sample();
            sort(&mut e, Sort::from_query(Some(q)));
            assert_eq!(names(&e), *want, "{q}");
        }
    }

    #[test]
    fn html_escapes_names_and_percent_encodes_links() {
        let e = vec![
            entry("<b>&\"x'.txt", false, 1, 0),
            entry("a #b%c,[d]?.txt", false, 2048, 0),
            entry("caf\u{e9} \u{2603}", true, 0, 0),
            entry("javascript:alert(1)", false, 1, 0),
        ];
        let page = html("/x/<y>/", &e, false, Sort::from_query(None), false);
        assert!(page.contains("Index of /x/&lt;y&gt;/"));
        assert!(!page.contains("<b>&"));
        assert!(page.contains("&lt;b&gt;&amp;&quot;x&#39;.txt"));
        assert!(page.contains("href=\"%3Cb%3E%26%22x%27.txt\""));
        assert!(page.contains("href=\"a%20%23b%25c%2C%5Bd%5D%3F.txt\""));
        assert!(page.contains("href=\"caf%C3%A9%20%E2%98%83/\""));
        assert!(page.contains("href=\"javascript%3Aalert%281%29\""));
        assert!(page.contains("<a href=\"../\">../</a>"));
        assert!(page.contains("2.0 KiB"));
        assert!(page.contains("1 directory, 3 files"));
        let root = html("/", &e, true, Sort::from_query(None), true);
        assert!(!root.contains("href=\"../\""));
        assert!(root.contains("only the first"));
    }

    #[test]
    fn column_headers_link_to_the_other_order() {
        let page = html("/", &[], true, Sort::from_query(Some("sort=size")), false);
        assert!(page.contains("href=\"?sort=size&amp;order=desc\">Size</a> \u{25B2}"));
        assert!(page.contains("href=\"?sort=name&amp;order=asc\">Name</a></th>"));
    }

    #[test]
    fn json_lists_name_type_size_and_modified() {
        let mut e = sample();
        e.push(Entry {
            name: b"link".to_vec(),
            kind: Kind::Symlink,
            is_dir: false,
            size: 7,
            modified: None,
        });
        let v: serde_json::Value = serde_json::from_str(&json(&e)).unwrap();
        let arr = v.as_array().unwrap();
        assert_eq!(arr.len(), 6);
        assert_eq!(arr[0]["name"], "b.txt");
        assert_eq!(arr[0]["type"], "file");
        assert_eq!(arr[0]["size"], 300);
        assert_eq!(arr[0]["modified"], "1970-01-01T00:00:30Z");
        assert_eq!(arr[2]["type"], "dir");
        assert_eq!(arr[5]["type"], "symlink");
        assert!(arr[5]["modified"].is_null());
    }

    #[test]
    fn sizes_and_dates_read_well() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(2 * 1024 * 1024), "2.0 MiB");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_709_210_096); // 2024-02-29T12:34:56Z
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56Z");
        assert_eq!(display_time(t), "2024-02-29 12:34");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00Z");
    }
}
