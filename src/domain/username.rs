//! The rule for account names, shared by first-run setup, the Users page and the CLI.

/// Checks a new account's name; the reason is shown to the admin.
pub fn check_username(username: &str) -> Result<(), String> {
    let n = username.chars().count();
    if n == 0 || n > 64 {
        Err("The user name must have 1 to 64 characters.".into())
    } else if username
        .chars()
        .any(|c| c.is_control() || c.is_whitespace())
    {
        Err("The user name must not contain spaces or control characters.".into())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::check_username;

    #[test]
    fn names_have_1_to_64_characters_without_spaces() {
        assert!(check_username("alice").is_ok());
        assert!(check_username(&"é".repeat(64)).is_ok());
        assert!(check_username("").is_err());
        assert!(check_username(&"a".repeat(65)).is_err());
        assert!(check_username("al ice").is_err());
        assert!(check_username("al\u{7}ice").is_err());
    }
}
