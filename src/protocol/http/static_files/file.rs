//! One regular file, already open and allowed: validators and conditionals, ranges, the
//! precompressed sidecar or on-the-fly gzip, and the open-file cache (steps 4 to 8 of the
//! handler's order in the parent module).

use super::*;

impl StaticFiles {
    /// Steps 4 to 8 for one regular file, already open. `cacheable`: the file is what the
    /// request's own path names (not a fallback), so a plain answer may be cached under it.
    pub(super) fn serve_file(
        &self,
        req: &Request<'_>,
        url: &UrlPath,
        target: &Path,
        file: File,
        meta: &Metadata,
        cacheable: bool,
    ) -> Response {
        // Step 4. The type follows the name the client asked for (a symlink `latest` to
        // `v2.tar.gz` is typed by `latest`, as nginx does).
        let ctype = mime::content_type(&url.relative());
        if !mime::acceptable(joined(req, "Accept").as_deref(), &ctype) {
            return error_response(
                406,
                &format!("This resource is only available as {ctype}, which the request's Accept excludes."),
            );
        }

        // Step 5.
        let ae = AcceptEncoding::parse(joined(req, "Accept-Encoding").as_deref());
        // Every sidecar is looked for, even of codings the client refuses: one that exists
        // means another client could get another answer here, so `Vary` must say so (RFC
        // 9110 §12.5.5) on the identity answer too. (A repeated plain GET skips all of this:
        // the open-file cache answers it.)
        let sidecars: Vec<(Coding, PathBuf)> = Coding::ALL
            .iter()
            .filter_map(|&c| {
                let mut p = target.as_os_str().to_owned();
                p.push(".");
                p.push(c.extension());
                let p = PathBuf::from(p);
                p.is_file().then_some((c, p))
            })
            .collect();
        let size = meta.len();
        let inherent = mime::inherent_coding(&url.relative());
        let gzip_possible = self.cfg.compress
            && inherent.is_none()
            && encoding::compressible(&ctype)
            && (encoding::GZIP_MIN_SIZE..=encoding::GZIP_MAX_SIZE).contains(&size);
        let vary = !sidecars.is_empty() || (self.cfg.compress && encoding::compressible(&ctype));

        let file = Arc::new(file);
        let mut coding = None;
        let mut made_here = false;
        let mut selected: Option<(Content, Validators)> = None;
        let available: Vec<Coding> = sidecars
            .iter()
            .map(|(c, _)| *c)
            .filter(|&c| ae.q(c) > 0)
            .collect();
        if let Some(c) = ae.pick(&available) {
            let sidecar = sidecars.iter().find(|(sc, _)| *sc == c).map(|(_, p)| p);
            if let Some((sf, sm)) = sidecar.and_then(|p| self.open_sidecar(p)) {
                let v = Validators::new(sm.len(), mtime(&sm), &format!("-{}", c.token()));
                selected = Some((
                    Content::File {
                        file: Arc::new(sf),
                        len: sm.len(),
                    },
                    v,
                ));
                coding = Some(c);
            }
        }
        if selected.is_none() && gzip_possible && ae.pick(&[Coding::Gzip]).is_some() {
            let key = CacheKey {
                path: target.to_path_buf(),
                size,
                mtime_ns: mtime_ns(meta),
            };
            if let Some(gz) = self.gzip.get(&key, &file) {
                // Bytes made here, which another build of the compressor could make
                // differently: a weak ETag, and no ranges (a resumed download could splice
                // two different streams), as nginx's gzip filter does.
                selected = Some((
                    Content::Bytes(gz),
                    Validators::new(size, mtime(meta), "-gzip").weak(),
                ));
                coding = Some(Coding::Gzip);
                made_here = true;
            }
        }
        let (content, validators) = selected.unwrap_or_else(|| {
            (
                Content::File {
                    file: file.clone(),
                    len: size,
                },
                Validators::new(size, mtime(meta), ""),
            )
        });

        // Step 8's headers, shared by 200, 206 and 304 (§15.4.5 lists what a 304 repeats).
        let mut headers: Vec<(&'static str, String)> = vec![
            ("ETag", validators.etag.clone()),
            ("Last-Modified", validators.http_date()),
        ];
        if let Some(cc) = self.cache_rules.lookup(&url.display()) {
            headers.push(("Cache-Control", cc.to_string()));
        }
        if vary {
            headers.push(("Vary", "Accept-Encoding".to_string()));
        }
        let build = |status: u16| {
            let mut r = Response::new(status);
            for (n, v) in &headers {
                r = r.header(*n, v.clone());
            }
            r
        };

        // Step 6.
        let conditions = Conditions {
            if_match: joined(req, "If-Match"),
            if_none_match: joined(req, "If-None-Match"),
            if_modified_since: req.header("If-Modified-Since").map(str::to_string),
            if_unmodified_since: req.header("If-Unmodified-Since").map(str::to_string),
            if_range: req.header("If-Range").map(str::to_string),
            has_range: req.header_all("Range").count() == 1,
        };
        let use_range = match conditional::evaluate(&conditions, &validators, true) {
            Outcome::NotModified => return build(304),
            Outcome::PreconditionFailed => {
                let mut r = error_response(412, "A precondition in the request does not hold.");
                r.headers.extend(
                    headers
                        .iter()
                        .filter(|(n, _)| *n == "ETag" || *n == "Last-Modified")
                        .map(|(n, v)| ((*n).into(), v.clone().into())),
                );
                return r;
            }
            Outcome::Proceed { use_range } => use_range,
        };

        let full = |content: &Content| {
            let mut r = build(200).header("Content-Type", ctype.clone());
            if !made_here {
                r = r.header("Accept-Ranges", "bytes");
            }
            r = r.header("X-Content-Type-Options", "nosniff");
            if let Some(c) = coding.map(Coding::token).or(inherent) {
                r = r.header("Content-Encoding", c);
            }
            r.with_body(content.body())
        };

        // Step 7. HEAD is treated as GET here so that it gets the same header fields
        // (§9.3.2); the session drops the body.
        let len = content.len();
        let ranges = match (use_range && !made_here, req.header("Range")) {
            (true, Some(v)) => range::parse(v, len),
            _ => RangeSet::Ignore,
        };
        match ranges {
            RangeSet::Ignore => {
                let r = full(&content);
                if cacheable && coding.is_none() && self.files.enabled() {
                    self.remember(req, target, &file, meta, &r, &ctype);
                }
                r
            }
            RangeSet::Unsatisfiable => {
                error_response(416, "The requested range is outside the content.")
                    .header("Content-Range", format!("bytes */{len}"))
                    .header("Accept-Ranges", "bytes")
            }
            // Several ranges of a coded representation: the parts would be slices of, say, the
            // gzip stream inside a multipart body that is not gzip itself, and clients that
            // undo the Content-Encoding fail on it. The whole coded answer goes instead (§14.2
            // lets a server ignore Range), as nginx does.
            RangeSet::Ranges(rs) if (coding.is_some() || inherent.is_some()) && rs.len() > 1 => {
                full(&content)
            }
            RangeSet::Ranges(rs) => {
                let mut r = build(206)
                    .header("Accept-Ranges", "bytes")
                    .header("X-Content-Type-Options", "nosniff");
                if let Some(c) = coding.map(Coding::token).or(inherent) {
                    r = r.header("Content-Encoding", c);
                }
                if let [(a, b)] = rs[..] {
                    r.header("Content-Type", ctype.clone())
                        .header("Content-Range", range::content_range(a, b, len))
                        .with_body(content.slice(a, b))
                } else {
                    let boundary = range::boundary();
                    let body = range::multipart(&content, &rs, &ctype, &boundary);
                    r.header(
                        "Content-Type",
                        format!("multipart/byteranges; boundary={boundary}"),
                    )
                    .with_body(body)
                }
            }
        }
    }

    /// Keep a plain request's identity answer in the open-file cache. Only answers that a plain
    /// request without `Accept-Encoding` gets, or that no coding could change, are kept.
    pub(super) fn remember(
        &self,
        req: &Request<'_>,
        target: &Path,
        file: &Arc<File>,
        meta: &Metadata,
        resp: &Response,
        ctype: &str,
    ) {
        let Some(plain) = FileCache::plain(req) else {
            return;
        };
        let no_sidecar = Coding::ALL.iter().all(|c| {
            let mut p = target.as_os_str().to_owned();
            p.push(".");
            p.push(c.extension());
            !Path::new(&p).exists()
        });
        let any_encoding = no_sidecar && !(self.cfg.compress && encoding::compressible(ctype));
        if plain.encoding && !any_encoding {
            return;
        }
        let id = FileId::of(meta);
        self.files.put(
            req.path,
            Fill {
                file,
                id,
                headers: &resp.headers,
                content_type: ctype,
                any_encoding,
            },
            std::time::Instant::now(),
        );
    }

    /// Open a precompressed sidecar if it is a regular file the root rules allow.
    pub(super) fn open_sidecar(&self, p: &Path) -> Option<(File, Metadata)> {
        let canon = std::fs::canonicalize(p).ok()?;
        if !self.cfg.follow_symlinks && !canon.starts_with(&self.root) {
            return None;
        }
        let (f, m) = open(&canon, &self.root).ok()?;
        m.is_file().then_some((f, m))
    }
}
