//! Landing-URL templates with macros expanded at click time: `{click_id}`, `{campaign}` and
//! `{dim.NAME}`. Each value is percent-encoded (RFC 3986 unreserved characters kept) so that it
//! can never change the URL's scheme, host or path.

/// A checked template. Checked at load time (campaigns file): absolute `http`/`https` URL with
/// a non-empty host, no macro, whitespace or control character in the scheme or authority,
/// only known macros, balanced braces.
#[derive(Clone, Debug, PartialEq)]
pub struct Template { /* implementation-defined */ }

#[derive(Debug, PartialEq)]
pub struct TemplateError(pub String);

impl Template {
    pub fn parse(url: &str) -> Result<Template, TemplateError> { unimplemented!() }
}

/// Expands `url` (a template that passed [`Template::parse`], as stored in the campaign table)
/// into `out` (appended). `dims` are (name, value) pairs; a missing dimension expands to "".
pub fn expand(url: &[u8], click_id: &[u8], campaign: &[u8], dims: &[(&[u8], &[u8])], out: &mut Vec<u8>) { unimplemented!() }
