//! `Cache-Control` by path glob (RFC 9111 §5.2.2). The default is no header at all, as nginx
//! does: caches then fall back to validators and heuristics. Rules are tried in order against
//! the normalized, decoded URL path (`/assets/app.js`); the first match wins. `*` also matches
//! `/`, so `*.css` covers every CSS file and `/assets/*` everything below `/assets/`.

use super::ConfigError;

/// Compiled `(glob, value)` rules.
#[derive(Clone, Debug, Default)]
pub struct CacheRules {
    rules: Vec<(glob::Pattern, String)>,
}

const OPTIONS: glob::MatchOptions = glob::MatchOptions {
    case_sensitive: true,
    require_literal_separator: false,
    require_literal_leading_dot: false,
};

impl CacheRules {
    /// Compile the configured rules; a bad glob or a value that cannot be a header is refused.
    pub fn new(rules: &[(String, String)]) -> Result<CacheRules, ConfigError> {
        let rules = rules
            .iter()
            .map(|(glob, value)| {
                let pattern = glob::Pattern::new(glob)
                    .map_err(|e| ConfigError::CacheGlob(glob.clone(), e.to_string()))?;
                if value.is_empty() || value.bytes().any(|b| b.is_ascii_control()) {
                    return Err(ConfigError::CacheValue(glob.clone()));
                }
                Ok((pattern, value.clone()))
            })
            .collect::<Result<_, _>>()?;
        Ok(CacheRules { rules })
    }

    /// The `Cache-Control` value for URL path `path`, if any rule matches.
    pub fn lookup(&self, path: &str) -> Option<&str> {
        self.rules
            .iter()
            .find(|(p, _)| p.matches_with(path, OPTIONS))
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(r: &[(&str, &str)]) -> CacheRules {
        CacheRules::new(
            &r.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<Vec<_>>(),
        )
        .unwrap()
    }

    #[test]
    fn the_first_matching_glob_gives_the_value() {
        let r = rules(&[
            ("/assets/*", "public, max-age=31536000, immutable"),
            ("*.html", "no-cache"),
            ("*", "max-age=60"),
        ]);
        let table: &[(&str, &str)] = &[
            ("/assets/app.js", "public, max-age=31536000, immutable"),
            ("/assets/deep/x.css", "public, max-age=31536000, immutable"),
            ("/index.html", "no-cache"),
            ("/docs/page.html", "no-cache"),
            ("/logo.png", "max-age=60"),
        ];
        for (path, want) in table {
            assert_eq!(r.lookup(path), Some(*want), "{path}");
        }
        assert_eq!(rules(&[("*.css", "x")]).lookup("/a.js"), None);
        assert_eq!(CacheRules::default().lookup("/a.js"), None);
    }

    #[test]
    fn bad_globs_and_values_are_usage_errors() {
        assert!(CacheRules::new(&[("[".into(), "x".into())]).is_err());
        assert!(CacheRules::new(&[("*".into(), "a\r\nb".into())]).is_err());
        assert!(CacheRules::new(&[("*".into(), String::new())]).is_err());
    }
}
