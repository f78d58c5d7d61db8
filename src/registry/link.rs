//! RFC 8288 `Link` headers, as registries use them to page tag lists and the catalog:
//! `</v2/_catalog?last=b&n=100>; rel="next"`.

/// The target of the first `rel="next"` link in `header`, if any.
pub fn next(header: &str) -> Option<String> {
    let mut rest = header;
    loop {
        let open = rest.find('<')?;
        let close = open + rest[open..].find('>')?;
        let target = &rest[open + 1..close];
        rest = &rest[close + 1..];
        // Parameters run to the next link (a ',' outside quotes) or the end.
        let mut params_end = rest.len();
        let mut quoted = false;
        for (i, c) in rest.char_indices() {
            match c {
                '"' => quoted = !quoted,
                ',' if !quoted => {
                    params_end = i;
                    break;
                }
                _ => {}
            }
        }
        let params = &rest[..params_end];
        let is_next = params.split(';').any(|p| {
            let Some((k, v)) = p.split_once('=') else { return false };
            k.trim().eq_ignore_ascii_case("rel")
                && v.trim().trim_matches('"').split_ascii_whitespace().any(|r| r.eq_ignore_ascii_case("next"))
        });
        if is_next && !target.is_empty() {
            return Some(target.to_string());
        }
        rest = &rest[params_end..];
    }
}

#[cfg(test)]
mod tests {
    use super::next;

    #[test]
    fn finds_next_links() {
        assert_eq!(next(r#"</v2/_catalog?last=b&n=100>; rel="next""#).as_deref(), Some("/v2/_catalog?last=b&n=100"));
        assert_eq!(
            next(r#"<https://r/v2/x/tags/list?n=2&last=b>; rel=next"#).as_deref(),
            Some("https://r/v2/x/tags/list?n=2&last=b")
        );
        assert_eq!(next(r#"</a>; rel="prev", </b>; rel="next""#).as_deref(), Some("/b"));
        assert_eq!(next(r#"</a>; title="x, y"; rel="prev next""#).as_deref(), Some("/a"));
        assert_eq!(next(r#"</a>; rel="prev""#), None);
        assert_eq!(next(""), None);
        assert_eq!(next("<"), None);
        assert_eq!(next("<>; rel=next"), None);
        assert_eq!(next("garbage; rel=next"), None);
    }
}
