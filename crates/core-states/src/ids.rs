//! Typed ids. Every id is a string newtype: stored and serialised as its plain text.

/// Defines a string id newtype with `Display`, `FromStr`, `AsRef<str>`, `From<&str>` and
/// `From<String>`, comparison with text (`id == "t1"`) and a transparent serde form.
///
/// Used by the other crates of the workspace for their own ids (`TraceId`, `LessonId`…).
#[macro_export]
macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps any text as this id.
            pub fn new(id: impl Into<String>) -> Self {
                Self(id.into())
            }

            /// A fresh random (UUID v4) id.
            pub fn random() -> Self {
                Self(uuid::Uuid::new_v4().to_string())
            }

            /// The id's text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = std::convert::Infallible;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Ok(Self(s.to_owned()))
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<$name> for str {
            fn eq(&self, other: &$name) -> bool {
                self == other.0
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }
    };
}

string_id!(
    /// The id of a task (one run of the workflow).
    TaskId
);
string_id!(
    /// The id of a project; tasks, audit entries, lessons and traces belong to one.
    ProjectId
);
string_id!(
    /// The id of a checkpoint.
    CheckpointId
);

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Any text is an id that serialises as that text, reads back equal, and compares
        /// equal to the text both ways round and to nothing else.
        #[test]
        fn an_id_is_its_text_in_json_and_in_comparisons(text in "\\PC{0,24}", other in "\\PC{0,24}") {
            let id = TaskId::from(text.as_str());
            let json = serde_json::to_string(&id).unwrap_or_default();
            proptest::prop_assert_eq!(&json, &serde_json::to_string(&text).unwrap_or_default());
            proptest::prop_assert_eq!(serde_json::from_str::<TaskId>(&json).ok(), Some(id.clone()));
            proptest::prop_assert!(id == text.as_str() && text.as_str() == id);
            proptest::prop_assert!(id == *text.as_str() && *text.as_str() == id);
            proptest::prop_assert_eq!(id == other.as_str(), text == other);
            proptest::prop_assert_eq!(other.as_str() == id, text == other);
        }
    }
}
