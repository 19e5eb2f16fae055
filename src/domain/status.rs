//! The states an invalidation, one of its URLs and an account can be in, and the rule that
//! turns URL outcomes into an invalidation's final status.
//!
//! Each is stored as text. Decoding a value that is not one of them is an error, never a
//! silent default: a row that does not parse means the database and the code disagree.

/// Declares a text-stored enum with `as_str`, `parse`, `Display`, serde, and sqlx
/// `Type`/`Encode`/`Decode` for every backend whose `str` is a text type.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }

            pub fn parse(raw: &str) -> Option<Self> {
                match raw { $($text => Some(Self::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl<DB: sqlx::Database> sqlx::Type<DB> for $name
        where
            str: sqlx::Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <str as sqlx::Type<DB>>::type_info()
            }
            fn compatible(ty: &DB::TypeInfo) -> bool {
                <str as sqlx::Type<DB>>::compatible(ty)
            }
        }

        impl<'q, DB: sqlx::Database> sqlx::Encode<'q, DB> for $name
        where
            &'q str: sqlx::Encode<'q, DB>,
        {
            fn encode_by_ref(
                &self,
                buf: &mut <DB as sqlx::Database>::ArgumentBuffer<'q>,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&'q str as sqlx::Encode<'q, DB>>::encode(self.as_str(), buf)
            }
        }

        impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for $name
        where
            &'r str: sqlx::Decode<'r, DB>,
        {
            fn decode(
                value: <DB as sqlx::Database>::ValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let raw = <&'r str as sqlx::Decode<'r, DB>>::decode(value)?;
                Self::parse(raw).ok_or_else(|| {
                    format!(concat!("\"{}\" is not a known ", stringify!($name)), raw).into()
                })
            }
        }
    };
}

text_enum!(
    /// What the rows of an invalidation are, and so what its requests carry (see
    /// [`crate::domain::variants`]).
    Scope {
        Urls => "urls",
        Tags => "tags",
        Prefixes => "prefixes",
        Everything => "everything",
    }
);

text_enum!(
    /// Where an invalidation is in its life.
    InvalidationStatus {
        Queued => "queued",
        Running => "running",
        Succeeded => "succeeded",
        PartiallyFailed => "partially_failed",
        Failed => "failed",
    }
);

text_enum!(
    /// Where one URL of an invalidation is.
    UrlStatus {
        Queued => "queued",
        Retrying => "retrying",
        Submitted => "submitted",
        Succeeded => "succeeded",
        Failed => "failed",
    }
);

text_enum!(
    /// What a user may do.
    Role {
        Admin => "admin",
        User => "user",
    }
);

impl InvalidationStatus {
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::PartiallyFailed | Self::Failed)
    }

    /// The status that follows from the counts of an invalidation's URLs: running while any
    /// is still to send or waiting on its provider, then succeeded, failed, or partly both.
    pub fn from_counts(succeeded: i64, failed: i64, unfinished: i64) -> Self {
        if unfinished > 0 {
            Self::Running
        } else if failed == 0 {
            Self::Succeeded
        } else if succeeded == 0 {
            Self::Failed
        } else {
            Self::PartiallyFailed
        }
    }
}

impl UrlStatus {
    /// Final: nothing more will be sent or asked for this URL.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_round_trips_through_its_text() {
        for s in InvalidationStatus::ALL {
            assert_eq!(InvalidationStatus::parse(s.as_str()), Some(*s));
        }
        for s in UrlStatus::ALL {
            assert_eq!(UrlStatus::parse(s.as_str()), Some(*s));
        }
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(*r));
        }
        assert_eq!(UrlStatus::parse("Succeeded"), None);
        assert_eq!(Role::parse(""), None);
    }

    #[test]
    fn final_status_follows_the_url_counts() {
        use InvalidationStatus::*;
        assert_eq!(InvalidationStatus::from_counts(3, 0, 1), Running);
        assert_eq!(InvalidationStatus::from_counts(0, 0, 0), Succeeded);
        assert_eq!(InvalidationStatus::from_counts(3, 0, 0), Succeeded);
        assert_eq!(InvalidationStatus::from_counts(0, 2, 0), Failed);
        assert_eq!(InvalidationStatus::from_counts(1, 2, 0), PartiallyFailed);
    }
}
