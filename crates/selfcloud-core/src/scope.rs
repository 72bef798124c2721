//! OAuth scopes (SPEC §4). Each carries the plain-words description shown on the consent screen.

/// A permission an app may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Chat with the user's AI; the app sees only its own conversations.
    AiChat,
    /// The app's conversations may draw on notes and files the user shares with the AI.
    AiCollaborate,
    /// Read the app's own key-value namespace.
    StorageRead,
    /// Write the app's own key-value namespace.
    StorageWrite,
    /// Read and list the app's files.
    FilesRead,
    /// Add and unpin the app's files.
    FilesWrite,
    /// Read the app's own databases.
    DbRead,
    /// Write the app's own databases.
    DbWrite,
    /// The user's address, balance and history.
    ChainRead,
    /// Submit transactions within limits set at consent.
    ChainTransact,
    /// Encrypt, decrypt and sign with the user's keys.
    CryptoUse,
    /// Deliver notifications to other users' inboxes.
    NetworkNotify,
}

impl Scope {
    /// Every scope, in the order the consent screen lists them.
    pub const ALL: [Scope; 12] = [
        Scope::AiChat,
        Scope::AiCollaborate,
        Scope::StorageRead,
        Scope::StorageWrite,
        Scope::FilesRead,
        Scope::FilesWrite,
        Scope::DbRead,
        Scope::DbWrite,
        Scope::ChainRead,
        Scope::ChainTransact,
        Scope::CryptoUse,
        Scope::NetworkNotify,
    ];

    /// The wire name, e.g. `storage:read`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::AiChat => "ai:chat",
            Scope::AiCollaborate => "ai:collaborate",
            Scope::StorageRead => "storage:read",
            Scope::StorageWrite => "storage:write",
            Scope::FilesRead => "files:read",
            Scope::FilesWrite => "files:write",
            Scope::DbRead => "db:read",
            Scope::DbWrite => "db:write",
            Scope::ChainRead => "chain:read",
            Scope::ChainTransact => "chain:transact",
            Scope::CryptoUse => "crypto:use",
            Scope::NetworkNotify => "network:notify",
        }
    }

    /// Parse a wire name.
    pub fn parse(value: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == value)
    }

    /// What the user is agreeing to, in plain words, for the consent screen.
    pub fn description(self) -> &'static str {
        match self {
            Scope::AiChat => "Chat with your private AI. The app sees only the conversations it started.",
            Scope::AiCollaborate => "Let the AI draw on the notes and files you chose to share with it when answering this app.",
            Scope::StorageRead => "Read the data this app saved in your instance (never other apps' data).",
            Scope::StorageWrite => "Save, change and delete this app's own data in your instance.",
            Scope::FilesRead => "Read and list the files this app added to your storage.",
            Scope::FilesWrite => "Add files to your storage and remove the ones this app added.",
            Scope::DbRead => "Read this app's own databases in your instance.",
            Scope::DbWrite => "Create and write this app's own databases in your instance.",
            Scope::ChainRead => "See your SELF Chain address, balance and transaction history.",
            Scope::ChainTransact => "Send SELF Chain transactions signed by your key, up to the daily limit you set below.",
            Scope::CryptoUse => "Encrypt to other users, and decrypt and sign with your keys (the keys never leave your instance).",
            Scope::NetworkNotify => "Send notifications in your name to other users' inboxes.",
        }
    }

    /// Parse a space-separated scope string (OAuth's `scope` parameter). Unknown names are an error.
    pub fn parse_list(value: &str) -> Result<Vec<Scope>, String> {
        let mut out = Vec::new();
        for name in value.split(' ').filter(|s| !s.is_empty()) {
            let scope = Scope::parse(name).ok_or_else(|| format!("unknown scope {name:?}"))?;
            if !out.contains(&scope) {
                out.push(scope);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Join scopes into OAuth's space-separated form.
    pub fn join(scopes: &[Scope]) -> String {
        scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn round_trip_and_lists() {
        for s in Scope::ALL {
            assert_eq!(Scope::parse(s.as_str()), Some(s));
        }
        assert_eq!(
            Scope::parse_list("storage:write  storage:read storage:read").unwrap(),
            vec![Scope::StorageRead, Scope::StorageWrite]
        );
        assert!(Scope::parse_list("storage:read admin").is_err());
    }
}
