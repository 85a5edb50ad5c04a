//! Step 3 (directories without an index file): the listing, as HTML a person is glad to read or
//! as JSON for programs (when `Accept` ranks `application/json` above `text/html`, or with
//! `?format=json` for clients that cannot set headers). Columns name, size and modified, sortable with
//! `?sort=name|size|modified&order=asc|desc` through links in the column headers (no script);
//! `..` first except at the root; directories before files, names in natural order (`9.txt`
//! before `10.txt`); dotfiles hidden unless shown. The heading is a trail of links to each
//! parent; times say their zone (UTC); a filter box narrows the rows as one types, in the page
//! itself (a small inline script, allowed by its hash alone in the Content-Security-Policy;
//! without script the page works as before). Long names wrap and a narrow screen (a phone)
//! keeps only the name column, so the page is never wider than its window.
//! Names are HTML-escaped, and links percent-encode every byte outside RFC 3986's unreserved
//! set, so `#`, `%`, `?`, `,`, `[`, `]`, `:`, spaces and non-ASCII names all link correctly.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::SystemTime;

use crate::protocol::http::message::{civil, html_escape, PAGE_STYLE};

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

/// Names as people order them: case-insensitively, and runs of digits by their value
/// (`9.txt` < `10.txt` < `010b`), as miniserve and file managers do.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (mut x, mut y) = (a.chars().peekable(), b.chars().peekable());
    loop {
        match (x.peek().copied(), y.peek().copied()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(c), Some(d)) if c.is_ascii_digit() && d.is_ascii_digit() => {
                let take = |it: &mut std::iter::Peekable<std::str::Chars<'_>>| {
                    let mut run = String::new();
                    while let Some(c) = it.peek().copied().filter(char::is_ascii_digit) {
                        run.push(c);
                        it.next();
                    }
                    run
                };
                let (m, n) = (take(&mut x), take(&mut y));
                let (mt, nt) = (m.trim_start_matches('0'), n.trim_start_matches('0'));
                // A longer run without leading zeros is a larger number; then digit by digit.
                let ord = mt.len().cmp(&nt.len()).then_with(|| mt.cmp(nt));
                if ord != Ordering::Equal {
                    return ord;
                }
            }
            (Some(c), Some(d)) => {
                let ord = c.to_lowercase().cmp(d.to_lowercase());
                if ord != Ordering::Equal {
                    return ord;
                }
                x.next();
                y.next();
            }
        }
    }
}

/// Sort entries: directories first, then by the key (names in natural order, ties by bytes).
pub fn sort(entries: &mut [Entry], sort: Sort) {
    entries.sort_by(|a, b| {
        b.is_dir.cmp(&a.is_dir).then_with(|| {
            let by_name = || {
                natural_cmp(
                    &String::from_utf8_lossy(&a.name),
                    &String::from_utf8_lossy(&b.name),
                )
                .then_with(|| a.name.cmp(&b.name))
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

/// The listing's own rules, after the page style it shares with error pages
/// ([`PAGE_STYLE`]). Names wrap anywhere (a 115-character name must not widen the page); below
/// 40rem only the name column is kept, as miniserve does on a phone.
const STYLE: &str = "table{border-collapse:collapse;width:100%}\
th,td{padding:.3rem .6rem;text-align:left;border-bottom:1px solid #eee}\
th{font-weight:600;border-bottom:2px solid #ddd;white-space:nowrap}\
td.name{overflow-wrap:anywhere}\
td.size,th.size{text-align:right;white-space:nowrap}td.modified{white-space:nowrap;color:#555}\
tr:hover td{background:#f3f7fb}tr.dir a{font-weight:600}\
#filter{font:inherit;padding:.3rem .5rem;margin:0 0 .6rem;width:100%;max-width:20rem;box-sizing:border-box}\
@media (max-width:40rem){body{margin:1rem auto}th.size,td.size,th.modified,td.modified{display:none}}\
@media (prefers-color-scheme:dark){th,td{border-color:#333}tr:hover td{background:#262b31}td.modified{color:#aaa}}";

/// The filter box's script: hides the rows whose name does not contain what is typed.
pub const FILTER_SCRIPT: &str = "document.getElementById('filter').addEventListener('input',function(){var q=this.value.toLowerCase();document.querySelectorAll('tbody tr').forEach(function(r){if(r.classList.contains('parent'))return;var n=r.querySelector('td.name').textContent.toLowerCase();r.style.display=n.indexOf(q)<0?'none':''})});";

/// `sha256-…` of [`FILTER_SCRIPT`], the one script the listing's Content-Security-Policy
/// allows (checked by a test).
pub const FILTER_SCRIPT_HASH: &str = "sha256-ZbP0n7JbPEulmwL74VNi8XqM+t1dONrlnAggRFcfv0Y=";

/// The listing's Content-Security-Policy: its inline style, and its one script by hash.
pub fn content_security_policy() -> String {
    format!("default-src 'none'; style-src 'unsafe-inline'; script-src '{FILTER_SCRIPT_HASH}'")
}

/// The heading's trail: `/` and each directory of `url_path` (decoded, ending in `/`) as a link
/// to itself.
fn breadcrumbs(url_path: &str) -> String {
    let mut s = String::from("<a href=\"/\">/</a>");
    let mut href = String::from("/");
    for seg in url_path.split('/').filter(|p| !p.is_empty()) {
        href.push_str(&encode_segment(seg.as_bytes()));
        href.push('/');
        s.push_str(&format!("<a href=\"{href}\">{}</a>/", html_escape(seg)));
    }
    s
}

/// The HTML listing of URL path `url_path` (decoded, ending in `/`).
pub fn html(
    url_path: &str,
    entries: &[Entry],
    at_root: bool,
    sort: Sort,
    truncated: bool,
    archives: bool,
    upload: bool,
) -> String {
    let title = html_escape(url_path);
    let mut s = String::with_capacity(1024 + entries.len() * 160);
    s.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    s.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    s.push_str(&format!(
        "<title>Index of {title}</title>\n<style>{PAGE_STYLE}{STYLE}</style>\n</head>\n"
    ));
    s.push_str(&format!(
        "<body>\n<h1>Index of {}</h1>\n<input id=\"filter\" type=\"search\" placeholder=\"Filter\" aria-label=\"Filter by name\" autocomplete=\"off\">\n<table>\n<thead><tr>",
        breadcrumbs(url_path)
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
        s.push_str("<tr class=\"dir parent\"><td class=\"name\"><a href=\"../\">../</a></td><td class=\"size\">-</td><td class=\"modified\"></td></tr>\n");
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
            "<tr class=\"{class}\"><td class=\"name\"><a{link} href=\"{href}{slash}\">{}{slash}</a></td><td class=\"size\">{size}</td><td class=\"modified\">{modified}</td></tr>\n",
            html_escape(&name)
        ));
    }
    s.push_str("</tbody>\n</table>\n");
    if upload {
        // Posted to this folder's own address; each chosen file lands here (`multipart`).
        s.push_str(
            "<form class=\"upload\" method=\"post\" enctype=\"multipart/form-data\">\
             <label>Upload files here: <input type=\"file\" name=\"file\" multiple required>\
             </label> <button type=\"submit\">Upload</button></form>\n",
        );
    }
    s.push_str("<footer>");
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
    if archives {
        s.push_str(
            " · Download this folder: <a href=\"?download=tar.gz\" download>.tar.gz</a> \
             <a href=\"?download=zip\" download>.zip</a>",
        );
    }
    s.push_str(" · served by tincan</footer>\n");
    s.push_str(&format!(
        "<script>{FILTER_SCRIPT}</script>\n</body>\n</html>\n"
    ));
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

/// RFC 3339 in UTC: `2026-11-21T23:13:47Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = civil(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// What the HTML listing shows: `2026-11-21 23:13 UTC` (minutes are enough for people; the
/// zone is said, since a reader's own is unknown).
fn display_time(t: SystemTime) -> String {
    let (y, mo, d, h, mi, _) = civil(t);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02} UTC")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use std::time::UNIX_EPOCH;

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
        // The query, then the names in the order it gives ("-": no query).
        let table = "\
            -                          adir zdir A.txt b.txt c.txt
            sort=name&order=desc       zdir adir c.txt b.txt A.txt
            sort=size                  adir zdir A.txt c.txt b.txt
            sort=size&order=desc       zdir adir b.txt c.txt A.txt
            order=asc&sort=modified    zdir adir A.txt b.txt c.txt
            sort=modified&order=desc   adir zdir c.txt b.txt A.txt
            sort=bogus&order=sideways  adir zdir A.txt b.txt c.txt";
        for row in table.lines() {
            let mut words = row.split_whitespace();
            let q = words.next().map(|q| if q == "-" { "" } else { q }).unwrap();
            let want: Vec<&str> = words.collect();
            let mut e = sample();
            sort(&mut e, Sort::from_query(Some(q)));
            assert_eq!(names(&e), want, "{q}");
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
        let page = html(
            "/x/<y>/",
            &e,
            false,
            Sort::from_query(None),
            false,
            false,
            false,
        );
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
        let root = html("/", &e, true, Sort::from_query(None), true, false, false);
        assert!(!root.contains("href=\"../\""));
        assert!(root.contains("only the first"));
    }

    /// The policy's hash is the script's (CSP Level 3 §8.4: base64 of SHA-256 of its text), so
    /// a browser runs it and nothing else.
    #[test]
    fn the_policy_allows_exactly_the_filter_script() {
        use base64::Engine as _;
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(FILTER_SCRIPT.as_bytes());
        let want = format!(
            "sha256-{}",
            base64::engine::general_purpose::STANDARD.encode(digest)
        );
        assert_eq!(FILTER_SCRIPT_HASH, want);
        assert!(content_security_policy().contains(&want));
        let page = html(
            "/",
            &sample(),
            true,
            Sort::from_query(None),
            false,
            false,
            false,
        );
        assert!(page.contains(&format!("<script>{FILTER_SCRIPT}</script>")));
    }

    #[test]
    fn names_sort_naturally_and_the_heading_links_every_parent() {
        let mut e = vec![
            entry("10.txt", false, 1, 0),
            entry("9.txt", false, 1, 0),
            entry("File2", false, 1, 0),
            entry("file10", false, 1, 0),
            entry("a", false, 1, 0),
        ];
        sort(&mut e, Sort::from_query(None));
        assert_eq!(names(&e), ["9.txt", "10.txt", "a", "File2", "file10"]);
        let page = html(
            "/a b/c/",
            &[],
            false,
            Sort::from_query(None),
            false,
            false,
            false,
        );
        assert!(
            page.contains("<h1>Index of <a href=\"/\">/</a><a href=\"/a%20b/\">a b</a>/<a href=\"/a%20b/c/\">c</a>/</h1>"),
            "{page}"
        );
        assert!(page.contains("id=\"filter\""));
    }

    #[test]
    fn column_headers_link_to_the_other_order() {
        let page = html(
            "/",
            &[],
            true,
            Sort::from_query(Some("sort=size")),
            false,
            false,
            false,
        );
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
        assert_eq!(display_time(t), "2024-02-29 12:34 UTC");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00Z");
    }
}
