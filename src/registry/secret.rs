//! What a source of credentials gives, with nothing of where it came from: the types both the
//! lookup (`credentials.rs`) and the helper runner (`helper.rs`) speak. Their `Debug` never shows
//! a password or token.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <hidden>)", self.username)
    }
}

impl Credentials {
    pub fn basic_header(&self) -> String {
        format!("Basic {}", STANDARD.encode(format!("{}:{}", self.username, self.password)))
    }
}

/// What a source of credentials gives: a username and password, or an identity token (docker's
/// `identitytoken`, a helper's `<token>` user), a refresh token exchanged at the token realm.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Basic(Credentials),
    IdentityToken(String),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Basic(c) => c.fmt(f),
            Secret::IdentityToken(_) => write!(f, "IdentityToken(<hidden>)"),
        }
    }
}
