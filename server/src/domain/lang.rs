//! The languages people read the service in, and the notation of numbers and
//! dates in each.
//!
//! Pages carry their language as a code in [`crate::views::Chrome::lang`]
//! (chosen from `Accept-Language`); texts that the domain words itself, such
//! as the control rules' refusals ([`super::control_text`]), are rendered
//! with a [`Lang`] so that a Finnish page never shows an English sentence.

/// A UI language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lang {
    /// English: the fallback, and the language of logs and the audit log.
    En,
    /// Finnish.
    Fi,
}

impl Lang {
    /// Every language, in the order texts are listed.
    pub const ALL: [Lang; 2] = [Lang::En, Lang::Fi];

    /// The language of a code such as `"fi"`; anything else is English
    /// (as [`crate::views::translate`] falls back).
    pub fn from_code(code: &str) -> Lang {
        if code == "fi" { Lang::Fi } else { Lang::En }
    }

    /// `"en"` or `"fi"`.
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Fi => "fi",
        }
    }

    /// A number already formatted with a decimal point, in this language's
    /// notation: Finnish uses a decimal comma ("21.5" → "21,5").
    pub fn decimal(self, formatted: &str) -> String {
        match self {
            Lang::En => formatted.to_owned(),
            Lang::Fi => formatted.replace('.', ","),
        }
    }

    /// A calendar date: ISO 8601 in English (as the date inputs post it),
    /// `24.12.2026` in Finnish.
    pub fn date(self, d: time::Date) -> String {
        match self {
            Lang::En => d.to_string(),
            Lang::Fi => format!("{}.{}.{}", d.day(), u8::from(d.month()), d.year()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_codes_fall_back_to_english() {
        for l in Lang::ALL {
            assert_eq!(Lang::from_code(l.code()), l);
        }
        assert_eq!(Lang::from_code("sv"), Lang::En);
        assert_eq!(Lang::from_code(""), Lang::En);
    }

    #[test]
    fn numbers_and_dates_follow_the_language() {
        assert_eq!(Lang::Fi.decimal("-21.5"), "-21,5");
        assert_eq!(Lang::En.decimal("21.5"), "21.5");
        let d = time::macros::date!(2026 - 12 - 04);
        assert_eq!(Lang::En.date(d), "2026-12-04");
        assert_eq!(Lang::Fi.date(d), "4.12.2026");
    }
}
