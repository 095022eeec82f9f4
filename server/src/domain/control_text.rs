//! Every sentence the remote-control rules say to a person, in English and
//! Finnish.
//!
//! The rules in [`super::control`] and the use-cases in
//! `services::control` never build a sentence: they return a [`Refusal`] (why
//! a request was not accepted) or store a [`CommandReason`] (why the server
//! ended a command), each carrying its facts as data (values, limits, the day
//! and the periods). A page renders them with its own [`Lang`], so numbers get
//! the language's notation too ("24,0 °C" on a Finnish page). The English text
//! is also the `Display` form, used in logs and the audit log.
//!
//! Both languages of a message sit next to each other in one `match`, so a
//! new message cannot be added without its Finnish.
//!
//! ```
//! use server::domain::{Lang, control_text::Refusal};
//! let r = Refusal::OutsideBand { value: 24.0, min: 19.0, max: 23.0, step: 0.1, unit: "°C".into() };
//! assert_eq!(
//!     r.text(Lang::Fi),
//!     "24,0 °C on asentajan asettaman mukavuusalueen 19,0–23,0 °C ulkopuolella."
//! );
//! assert_eq!(
//!     r.to_string(),
//!     "24.0 °C is outside the comfort band 19.0–23.0 °C set by your installer."
//! );
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{
    Lang,
    control::{MAX_EXCEPTIONS, MAX_PERIODS_PER_DAY, format_clock, format_value},
    dashboard::localized_label,
};

/// A number field of a control form, named in a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberField {
    /// A setpoint's value.
    Setpoint,
    /// A setpoint schedule's value inside its periods.
    ScheduleOn,
    /// A setpoint schedule's value outside its periods.
    ScheduleOff,
    /// The lower end of a comfort band.
    BandMin,
    /// The upper end of a comfort band.
    BandMax,
}

impl NumberField {
    /// English: a noun phrase for "Enter a number for …".
    fn en(self) -> &'static str {
        match self {
            NumberField::Setpoint => "the setpoint",
            NumberField::ScheduleOn => "the value inside the periods",
            NumberField::ScheduleOff => "the value outside the periods",
            NumberField::BandMin => "the lowest comfort value",
            NumberField::BandMax => "the highest comfort value",
        }
    }

    /// Finnish: the field's name as its label reads, for "kohtaan ”…”".
    fn fi(self) -> &'static str {
        match self {
            NumberField::Setpoint => "Asetusarvo",
            NumberField::ScheduleOn => "Arvo jaksojen aikana",
            NumberField::ScheduleOff => "Arvo jaksojen ulkopuolella",
            NumberField::BandMin => "Mukavuusalueen alaraja",
            NumberField::BandMax => "Mukavuusalueen yläraja",
        }
    }
}

/// The day a schedule refusal is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DayRef {
    /// A weekday row, 0 = Monday.
    Weekday(usize),
    /// An exception day.
    Date(time::Date),
}

const WEEKDAYS_EN: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];
const WEEKDAYS_FI: [&str; 7] = [
    "Maanantai",
    "Tiistai",
    "Keskiviikko",
    "Torstai",
    "Perjantai",
    "Lauantai",
    "Sunnuntai",
];

impl DayRef {
    /// The weekday's name or the date, in `lang`.
    pub fn text(self, lang: Lang) -> String {
        match self {
            DayRef::Weekday(i) => {
                let names = match lang {
                    Lang::En => &WEEKDAYS_EN,
                    Lang::Fi => &WEEKDAYS_FI,
                };
                names.get(i).copied().unwrap_or("?").to_owned()
            }
            DayRef::Date(d) => lang.date(d),
        }
    }
}

/// Why a control request was refused, with the facts to say so in any
/// language. Input a person typed is kept as typed (truncated by the rules).
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// A read-only account tried to change something.
    ReadOnly,
    /// Someone other than the installer tried to change the settings.
    OnlyInstaller,
    /// A number field was empty.
    NumberMissing { field: NumberField },
    /// A number field held too much text to be a number.
    NumberTooLong { field: NumberField },
    /// A number field held something else.
    NotANumber { field: NumberField, typed: String },
    /// A value outside the agent's envelope.
    OutsideLimits {
        value: f64,
        min: f64,
        max: f64,
        step: f64,
        unit: String,
    },
    /// A value off the envelope's step grid (shown as typed).
    OffStep { value: f64, step: f64, unit: String },
    /// A homeowner's value outside the installer's comfort band.
    OutsideBand {
        value: f64,
        min: f64,
        max: f64,
        step: f64,
        unit: String,
    },
    /// A comfort band reaching outside the envelope.
    BandOutsideLimits { min: f64, max: f64, step: f64 },
    /// A comfort band whose lower end is above its upper end.
    BandReversed,
    /// A comfort band for an output.
    NoBandForOutputs,
    /// A comfort band for an action.
    NoBandForActions,
    /// The output form's state was not on, off or auto.
    NotAnOutputState { typed: String },
    /// The action form's operation was not start or stop.
    NotAnActionOp { typed: String },
    /// An action's duration was not whole minutes.
    NotMinutes { typed: String },
    /// An action's duration outside 1 ..= its maximum. `action` is its
    /// label as the agent names it (possibly "Finnish / English").
    MinutesRange { max: u64, action: String },
    /// No control of that name at the site (or not visible to the person).
    UnknownControl { name: String },
    /// The agent does not let the point follow a schedule.
    NotSchedulable { control: String },
    /// A schedule form field came twice.
    FieldTwice { field: String },
    /// A schedule form field was too long.
    FieldTooLong { field: String },
    /// More exception rows than a schedule holds.
    TooManyExceptions,
    /// A day's periods were too long a text.
    DayTooLong { day: DayRef },
    /// Something that is not a period like 06:00-08:00.
    NotAPeriod { day: DayRef, typed: String },
    /// A period that ends before (or when) it starts; minutes after midnight.
    EndsBeforeStart { day: DayRef, start: u16, end: u16 },
    /// More periods in a day than a schedule holds.
    TooManyPeriods { day: DayRef },
    /// Two periods of a day overlap; minutes after midnight, in order.
    Overlap {
        day: DayRef,
        first: (u16, u16),
        second: (u16, u16),
    },
    /// An exception day's date did not parse.
    NotADate { typed: String },
    /// An exception day's kind was not holiday or away.
    NotAnExceptionKind { day: DayRef, typed: String },
    /// The same exception date twice.
    DateTwice { day: DayRef },
    /// A change needs a homeowner's confirmation, and the site has none.
    NoOwnerToAsk,
    /// A change needs a confirmation by e-mail, and e-mail is off.
    MailOff,
    /// The confirmation e-mail failed; the change was cancelled.
    MailFailed,
}

/// `n` with the decimals of `step`, in `lang`'s notation.
fn num(v: f64, step: f64, lang: Lang) -> String {
    lang.decimal(&format_value(v, step))
}

/// " °C" (or nothing for unitless values).
fn unit_suffix(unit: &str) -> String {
    if unit.is_empty() {
        String::new()
    } else {
        format!(" {unit}")
    }
}

/// A period as the form shows it in English ("06:00-08:00") and with an en
/// dash, as Finnish typography writes a range ("06:00–08:00").
fn period(start: u16, end: u16, lang: Lang) -> String {
    let dash = match lang {
        Lang::En => "-",
        Lang::Fi => "–",
    };
    format!("{}{dash}{}", format_clock(start), format_clock(end))
}

impl Refusal {
    /// The refusal as a sentence in `lang`.
    pub fn text(&self, lang: Lang) -> String {
        use Lang::{En, Fi};
        match (self, lang) {
            (Refusal::ReadOnly, En) => "This account can look but not change anything.".into(),
            (Refusal::ReadOnly, Fi) => {
                "Tällä tunnuksella voi vain katsella, ei muuttaa mitään.".into()
            }
            (Refusal::OnlyInstaller, En) => {
                "Only the installer sets comfort bands and what homeowners see.".into()
            }
            (Refusal::OnlyInstaller, Fi) => {
                "Vain asentaja asettaa mukavuusalueet ja valitsee, mitä asukkaat näkevät.".into()
            }
            (Refusal::NumberMissing { field }, En) => format!("Enter a number for {}.", field.en()),
            (Refusal::NumberMissing { field }, Fi) => {
                format!("Anna luku kohtaan ”{}”.", field.fi())
            }
            (Refusal::NumberTooLong { field }, En) => {
                format!("The {} is too long to be a number.", field.en())
            }
            (Refusal::NumberTooLong { field }, Fi) => {
                format!("Kohdan ”{}” arvo on liian pitkä luvuksi.", field.fi())
            }
            (Refusal::NotANumber { field, typed }, En) => {
                format!("'{typed}' is not a number ({}).", field.en())
            }
            (Refusal::NotANumber { field, typed }, Fi) => {
                format!("”{typed}” ei ole luku (kohta ”{}”).", field.fi())
            }
            (
                Refusal::OutsideLimits {
                    value,
                    min,
                    max,
                    step,
                    unit,
                },
                _,
            ) => {
                let (v, lo, hi, u) = (
                    num(*value, *step, lang),
                    num(*min, *step, lang),
                    num(*max, *step, lang),
                    unit_suffix(unit),
                );
                match lang {
                    En => format!("{v}{u} is outside the device's limits {lo}–{hi}{u}."),
                    Fi => format!("{v}{u} on laitteen rajojen {lo}–{hi}{u} ulkopuolella."),
                }
            }
            (Refusal::OffStep { value, step, unit }, _) => {
                // As typed (21.05), not rounded onto the grid it misses.
                let (v, s, u) = (
                    lang.decimal(&value.to_string()),
                    num(*step, *step, lang),
                    unit_suffix(unit),
                );
                match lang {
                    En => format!("{v}{u} is not a valid value: use steps of {s}{u}."),
                    Fi => format!("{v}{u} ei kelpaa: säätöaskel on {s}{u}."),
                }
            }
            (
                Refusal::OutsideBand {
                    value,
                    min,
                    max,
                    step,
                    unit,
                },
                _,
            ) => {
                let (v, lo, hi, u) = (
                    num(*value, *step, lang),
                    num(*min, *step, lang),
                    num(*max, *step, lang),
                    unit_suffix(unit),
                );
                match lang {
                    En => format!(
                        "{v}{u} is outside the comfort band {lo}–{hi}{u} set by your installer."
                    ),
                    Fi => format!(
                        "{v}{u} on asentajan asettaman mukavuusalueen {lo}–{hi}{u} ulkopuolella."
                    ),
                }
            }
            (Refusal::BandOutsideLimits { min, max, step }, _) => {
                let (lo, hi) = (num(*min, *step, lang), num(*max, *step, lang));
                match lang {
                    En => {
                        format!("The comfort band must lie within the device's limits {lo}–{hi}.")
                    }
                    Fi => format!("Mukavuusalueen on oltava laitteen rajojen {lo}–{hi} sisällä."),
                }
            }
            (Refusal::BandReversed, En) => "The lowest comfort value is above the highest.".into(),
            (Refusal::BandReversed, Fi) => "Mukavuusalueen alaraja on ylärajaa suurempi.".into(),
            (Refusal::NoBandForOutputs, En) => "Only setpoints have a comfort band.".into(),
            (Refusal::NoBandForOutputs, Fi) => "Mukavuusalue on vain asetusarvoilla.".into(),
            (Refusal::NoBandForActions, En) => "Actions have no comfort band.".into(),
            (Refusal::NoBandForActions, Fi) => "Toiminnoilla ei ole mukavuusaluetta.".into(),
            (Refusal::NotAnOutputState { typed }, En) => {
                format!("'{typed}' is not an output state (on, off or auto).")
            }
            (Refusal::NotAnOutputState { typed }, Fi) => {
                format!("”{typed}” ei ole lähdön tila (on, off tai auto).")
            }
            (Refusal::NotAnActionOp { typed }, En) => {
                format!("'{typed}' is not an action operation (start or stop).")
            }
            (Refusal::NotAnActionOp { typed }, Fi) => {
                format!("”{typed}” ei ole toiminnon komento (start tai stop).")
            }
            (Refusal::NotMinutes { typed }, En) => format!("'{typed}' is not a number of minutes."),
            (Refusal::NotMinutes { typed }, Fi) => format!("”{typed}” ei ole minuuttimäärä."),
            (Refusal::MinutesRange { max, action }, En) => format!(
                "Choose between 1 and {max} minutes for {}.",
                localized_label(action, "en")
            ),
            (Refusal::MinutesRange { max, action }, Fi) => format!(
                "{}: valitse kesto väliltä 1–{max} minuuttia.",
                localized_label(action, "fi")
            ),
            (Refusal::UnknownControl { name }, En) => {
                format!("This site has no control named '{name}'.")
            }
            (Refusal::UnknownControl { name }, Fi) => {
                format!("Kohteessa ei ole ohjausta nimeltä ”{name}”.")
            }
            (Refusal::NotSchedulable { control }, En) => {
                format!(
                    "The control {control} cannot follow a schedule (the agent does not allow it)."
                )
            }
            (Refusal::NotSchedulable { control }, Fi) => format!(
                "Ohjaus {control} ei voi noudattaa aikaohjelmaa (kohteen ohjauslaite ei salli sitä)."
            ),
            (Refusal::FieldTwice { field }, En) => format!("The field {field} was sent twice."),
            (Refusal::FieldTwice { field }, Fi) => format!("Kenttä {field} lähetettiin kahdesti."),
            (Refusal::FieldTooLong { field }, En) => format!("The field {field} is too long."),
            (Refusal::FieldTooLong { field }, Fi) => format!("Kenttä {field} on liian pitkä."),
            (Refusal::TooManyExceptions, En) => {
                format!("At most {MAX_EXCEPTIONS} exception days fit in one schedule.")
            }
            (Refusal::TooManyExceptions, Fi) => {
                format!("Aikaohjelmaan mahtuu enintään {MAX_EXCEPTIONS} poikkeuspäivää.")
            }
            (Refusal::DayTooLong { day }, En) => format!("{}: too long.", day.text(lang)),
            (Refusal::DayTooLong { day }, Fi) => format!("{}: liian pitkä teksti.", day.text(lang)),
            (Refusal::NotAPeriod { day, typed }, En) => format!(
                "{}: '{typed}' is not a period like 06:00-08:00.",
                day.text(lang)
            ),
            (Refusal::NotAPeriod { day, typed }, Fi) => format!(
                "{}: ”{typed}” ei ole jakso muotoa 06:00-08:00.",
                day.text(lang)
            ),
            (Refusal::EndsBeforeStart { day, start, end }, _) => {
                let (d, p) = (day.text(lang), period(*start, *end, lang));
                match (lang, start == end) {
                    (En, false) => format!("{d}: the period {p} ends before it starts."),
                    (En, true) => format!("{d}: the period {p} ends at the moment it starts."),
                    (Fi, false) => format!("{d}: jakso {p} päättyy ennen alkuaan."),
                    (Fi, true) => format!("{d}: jakso {p} päättyy samalla hetkellä kuin alkaa."),
                }
            }
            (Refusal::TooManyPeriods { day }, En) => format!(
                "{}: at most {MAX_PERIODS_PER_DAY} periods a day.",
                day.text(lang)
            ),
            (Refusal::TooManyPeriods { day }, Fi) => format!(
                "{}: enintään {MAX_PERIODS_PER_DAY} jaksoa päivässä.",
                day.text(lang)
            ),
            (Refusal::Overlap { day, first, second }, _) => {
                let (d, a, b) = (
                    day.text(lang),
                    period(first.0, first.1, lang),
                    period(second.0, second.1, lang),
                );
                match lang {
                    En => format!("{d}: {a} overlaps {b}."),
                    Fi => format!("{d}: jaksot {a} ja {b} menevät päällekkäin."),
                }
            }
            (Refusal::NotADate { typed }, En) => {
                format!("'{typed}' is not a date; use YYYY-MM-DD, e.g. 2026-12-24.")
            }
            (Refusal::NotADate { typed }, Fi) => {
                format!("”{typed}” ei ole päivämäärä; käytä muotoa VVVV-KK-PP, esim. 2026-12-24.")
            }
            (Refusal::NotAnExceptionKind { day, typed }, En) => format!(
                "{}: '{typed}' is not an exception kind (holiday or away).",
                day.text(lang)
            ),
            (Refusal::NotAnExceptionKind { day, typed }, Fi) => format!(
                "{}: ”{typed}” ei ole poikkeuspäivän tyyppi (loma tai poissa).",
                day.text(lang)
            ),
            (Refusal::DateTwice { day }, En) => format!("{} is listed twice.", day.text(lang)),
            (Refusal::DateTwice { day }, Fi) => {
                format!("Päivä {} on annettu kahdesti.", day.text(lang))
            }
            (Refusal::NoOwnerToAsk, En) => "This change is outside the comfort band and needs \
                 the owner's confirmation, but the site has no homeowner to ask."
                .into(),
            (Refusal::NoOwnerToAsk, Fi) => "Muutos on mukavuusalueen ulkopuolella ja vaatii \
                 omistajan vahvistuksen, mutta kohteella ei ole asukasta, jolta sitä voisi kysyä."
                .into(),
            (Refusal::MailOff, En) => "This change is outside the comfort band and needs the \
                 owner's confirmation by e-mail, but e-mail is not configured on this server."
                .into(),
            (Refusal::MailOff, Fi) => "Muutos on mukavuusalueen ulkopuolella ja vaatii omistajan \
                 vahvistuksen sähköpostitse, mutta tällä palvelimella ei ole sähköpostia käytössä."
                .into(),
            (Refusal::MailFailed, En) => "The confirmation e-mail could not be sent, so the \
                 change was cancelled. Try again later."
                .into(),
            (Refusal::MailFailed, Fi) => "Vahvistusviestiä ei saatu lähetettyä, joten muutos \
                 peruttiin. Yritä myöhemmin uudelleen."
                .into(),
        }
    }
}

/// English, for logs and the audit log.
impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text(Lang::En))
    }
}

/// Why the server (not the agent) ended a command. Stored in the command's
/// `reason` as JSON (`{"code":"not_confirmed_in_time"}`), so a page can say
/// it in its own language; the agent's own reasons are free text and stay
/// as they are (see [`CommandNote`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum CommandReason {
    /// A held change whose confirmation links all expired.
    NotConfirmedInTime,
    /// The agent stayed offline until the command expired; never sent.
    OfflineUntilExpiry,
    /// The confirmation e-mail could not be sent to anyone.
    MailNotSent,
    /// An owner declined it through the e-mailed link.
    Declined {
        /// Who declined.
        by: String,
    },
}

impl CommandReason {
    /// The stored form (JSON).
    pub fn to_stored(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A stored reason written by [`CommandReason::to_stored`]; `None` for
    /// anything else (an agent's text, or a row from before these codes).
    pub fn from_stored(stored: &str) -> Option<Self> {
        serde_json::from_str(stored).ok()
    }

    /// The reason as a phrase in `lang` (shown in parentheses after the
    /// command's status).
    pub fn text(&self, lang: Lang) -> String {
        match (self, lang) {
            (CommandReason::NotConfirmedInTime, Lang::En) => "not confirmed in time".into(),
            (CommandReason::NotConfirmedInTime, Lang::Fi) => "ei vahvistettu ajoissa".into(),
            (CommandReason::OfflineUntilExpiry, Lang::En) => {
                "the site was offline until the command expired; it was not sent".into()
            }
            (CommandReason::OfflineUntilExpiry, Lang::Fi) => {
                "kohde oli poissa yhteydestä, kunnes komento vanheni; sitä ei lähetetty".into()
            }
            (CommandReason::MailNotSent, Lang::En) => {
                "the confirmation e-mail could not be sent".into()
            }
            (CommandReason::MailNotSent, Lang::Fi) => "vahvistusviestiä ei saatu lähetettyä".into(),
            (CommandReason::Declined { by }, Lang::En) => format!("declined by {by}"),
            (CommandReason::Declined { by }, Lang::Fi) => format!("{by} hylkäsi muutoksen"),
        }
    }
}

/// English, for logs and the audit log.
impl fmt::Display for CommandReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text(Lang::En))
    }
}

/// The note shown after a command's status: the server's reason in the
/// page's language, or the agent's own words (English free text from the
/// house) labelled as coming from the site, so nobody takes them for the
/// web page's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandNote {
    /// The server ended it.
    Server(CommandReason),
    /// The agent answered with a reason.
    Site {
        /// The agent refused the command (rather than reporting on it).
        refused: bool,
        /// Its words.
        text: String,
    },
    /// A stored reason of neither kind (rows from before [`CommandReason`]).
    Plain(String),
}

impl CommandNote {
    /// The note of a stored reason: `answered_by_agent` when the agent's
    /// result set it (the command has a result time), `refused` when that
    /// result was a refusal. `None` when there is no reason.
    pub fn of_stored(stored: Option<&str>, answered_by_agent: bool, refused: bool) -> Option<Self> {
        let s = stored.map(str::trim).filter(|s| !s.is_empty())?;
        Some(if answered_by_agent {
            CommandNote::Site {
                refused,
                text: s.to_owned(),
            }
        } else {
            match CommandReason::from_stored(s) {
                Some(r) => CommandNote::Server(r),
                None => CommandNote::Plain(s.to_owned()),
            }
        })
    }

    /// The note in `lang`.
    pub fn text(&self, lang: Lang) -> String {
        match (self, lang) {
            (CommandNote::Server(r), _) => r.text(lang),
            (
                CommandNote::Site {
                    refused: true,
                    text,
                },
                Lang::En,
            ) => {
                format!("the site's controller refused: {text}")
            }
            (
                CommandNote::Site {
                    refused: true,
                    text,
                },
                Lang::Fi,
            ) => {
                format!("kohteen ohjauslaite kieltäytyi: {text}")
            }
            (
                CommandNote::Site {
                    refused: false,
                    text,
                },
                Lang::En,
            ) => {
                format!("the site's controller reported: {text}")
            }
            (
                CommandNote::Site {
                    refused: false,
                    text,
                },
                Lang::Fi,
            ) => {
                format!("kohteen ohjauslaite ilmoitti: {text}")
            }
            (CommandNote::Plain(text), _) => text.clone(),
        }
    }

    /// The note in every language, for the live feed (`{"en": …, "fi": …}`),
    /// which one message serves to viewers of any language.
    pub fn texts(&self) -> serde_json::Value {
        Lang::ALL
            .into_iter()
            .map(|l| (l.code().to_owned(), serde_json::Value::from(self.text(l))))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_refusal() -> Vec<Refusal> {
        let day = DayRef::Weekday(2);
        let date = DayRef::Date(time::macros::date!(2026 - 12 - 24));
        let s = |t: &str| t.to_owned();
        vec![
            Refusal::ReadOnly,
            Refusal::OnlyInstaller,
            Refusal::NumberMissing {
                field: NumberField::ScheduleOn,
            },
            Refusal::NumberTooLong {
                field: NumberField::BandMin,
            },
            Refusal::NotANumber {
                field: NumberField::Setpoint,
                typed: s("abc"),
            },
            Refusal::OutsideLimits {
                value: 30.0,
                min: 18.0,
                max: 27.0,
                step: 0.1,
                unit: s("°C"),
            },
            Refusal::OffStep {
                value: 21.05,
                step: 0.1,
                unit: s("°C"),
            },
            Refusal::OutsideBand {
                value: 24.0,
                min: 19.0,
                max: 23.0,
                step: 0.1,
                unit: s("°C"),
            },
            Refusal::BandOutsideLimits {
                min: 18.0,
                max: 27.0,
                step: 0.1,
            },
            Refusal::BandReversed,
            Refusal::NoBandForOutputs,
            Refusal::NoBandForActions,
            Refusal::NotAnOutputState { typed: s("x") },
            Refusal::NotAnActionOp { typed: s("x") },
            Refusal::NotMinutes { typed: s("x") },
            Refusal::MinutesRange {
                max: 180,
                action: s("Lämmin vesi tehostus / Boost hot water"),
            },
            Refusal::UnknownControl { name: s("x/y") },
            Refusal::NotSchedulable { control: s("x/y") },
            Refusal::FieldTwice { field: s("day0") },
            Refusal::FieldTooLong { field: s("day0") },
            Refusal::TooManyExceptions,
            Refusal::DayTooLong { day },
            Refusal::NotAPeriod {
                day,
                typed: s("6-8"),
            },
            Refusal::EndsBeforeStart {
                day,
                start: 480,
                end: 360,
            },
            Refusal::EndsBeforeStart {
                day,
                start: 360,
                end: 360,
            },
            Refusal::TooManyPeriods { day },
            Refusal::Overlap {
                day,
                first: (360, 480),
                second: (420, 540),
            },
            Refusal::NotADate { typed: s("x") },
            Refusal::NotAnExceptionKind {
                day: date,
                typed: s("party"),
            },
            Refusal::DateTwice { day: date },
            Refusal::NoOwnerToAsk,
            Refusal::MailOff,
            Refusal::MailFailed,
        ]
    }

    #[test]
    fn every_refusal_has_a_finnish_sentence_of_its_own() {
        for r in every_refusal() {
            let (en, fi) = (r.text(Lang::En), r.text(Lang::Fi));
            assert_ne!(en, fi, "{r:?}");
            assert_eq!(r.to_string(), en);
            for t in [&en, &fi] {
                assert!(t.ends_with('.'), "a whole sentence: {t}");
                assert!(t.chars().next().is_some_and(|c| !c.is_lowercase()), "{t}");
            }
        }
    }

    #[test]
    fn finnish_sentences_use_finnish_notation_and_names() {
        let wed = DayRef::Weekday(2);
        let off_step = Refusal::OffStep {
            value: 21.05,
            step: 0.1,
            unit: "°C".into(),
        };
        assert_eq!(
            off_step.text(Lang::Fi),
            "21,05 °C ei kelpaa: säätöaskel on 0,1 °C."
        );
        let backwards = Refusal::EndsBeforeStart {
            day: wed,
            start: 480,
            end: 360,
        };
        assert_eq!(
            backwards.text(Lang::Fi),
            "Keskiviikko: jakso 08:00–06:00 päättyy ennen alkuaan."
        );
        assert_eq!(
            backwards.text(Lang::En),
            "Wednesday: the period 08:00-06:00 ends before it starts."
        );
        let overlap = Refusal::Overlap {
            day: wed,
            first: (360, 480),
            second: (420, 540),
        };
        assert_eq!(
            overlap.text(Lang::Fi),
            "Keskiviikko: jaksot 06:00–08:00 ja 07:00–09:00 menevät päällekkäin."
        );
        let kind = Refusal::NotAnExceptionKind {
            day: DayRef::Date(time::macros::date!(2026 - 12 - 24)),
            typed: "party".into(),
        };
        assert_eq!(
            kind.text(Lang::Fi),
            "24.12.2026: ”party” ei ole poikkeuspäivän tyyppi (loma tai poissa)."
        );
        let minutes = Refusal::MinutesRange {
            max: 180,
            action: "Lämmin vesi tehostus / Boost hot water".into(),
        };
        assert_eq!(
            minutes.text(Lang::Fi),
            "Lämmin vesi tehostus: valitse kesto väliltä 1–180 minuuttia."
        );
        assert_eq!(
            minutes.text(Lang::En),
            "Choose between 1 and 180 minutes for Boost hot water."
        );
        let missing = Refusal::NumberMissing {
            field: NumberField::ScheduleOn,
        };
        assert_eq!(
            missing.text(Lang::Fi),
            "Anna luku kohtaan ”Arvo jaksojen aikana”."
        );
    }

    #[test]
    fn server_reasons_round_trip_through_the_store_and_agent_words_are_labelled() {
        let reasons = [
            CommandReason::NotConfirmedInTime,
            CommandReason::OfflineUntilExpiry,
            CommandReason::MailNotSent,
            CommandReason::Declined { by: "Maija".into() },
        ];
        for r in reasons {
            let stored = r.to_stored();
            assert_eq!(CommandReason::from_stored(&stored), Some(r.clone()));
            assert_eq!(
                CommandNote::of_stored(Some(&stored), false, false),
                Some(CommandNote::Server(r.clone()))
            );
            assert_ne!(r.text(Lang::En), r.text(Lang::Fi));
        }
        assert_eq!(
            CommandReason::from_stored(r#"{"code":"declined","by":"Maija"}"#)
                .map(|r| r.text(Lang::Fi)),
            Some("Maija hylkäsi muutoksen".into())
        );
        // The agent's words stay as they are, even if they look like a code.
        let agent = CommandNote::of_stored(Some(r#"{"code":"mail_not_sent"}"#), true, true);
        assert_eq!(
            agent.map(|n| n.text(Lang::Fi)),
            Some(r#"kohteen ohjauslaite kieltäytyi: {"code":"mail_not_sent"}"#.into())
        );
        let failed = CommandNote::of_stored(Some("read back 0, wanted 1"), true, false).unwrap();
        assert_eq!(
            failed.text(Lang::En),
            "the site's controller reported: read back 0, wanted 1"
        );
        assert_eq!(
            failed.texts(),
            serde_json::json!({
                "en": "the site's controller reported: read back 0, wanted 1",
                "fi": "kohteen ohjauslaite ilmoitti: read back 0, wanted 1",
            })
        );
        assert_eq!(CommandNote::of_stored(Some("  "), true, true), None);
        assert_eq!(
            CommandNote::of_stored(Some("not confirmed in time"), false, false),
            Some(CommandNote::Plain("not confirmed in time".into()))
        );
    }
}
