//! Deadlines of phases as Spanish public administrations count them (Ley 39/2015, art. 30):
//! business days, calendar days and months, suspensions and extensions. Pure code, no I/O.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;

use chrono::{Datelike, Days, Months, NaiveDate, Weekday};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

/// The maximum duration of a phase, as administrations count it.
///
/// JSON: `{"unit":"business_days","amount":10}`. Deserializing checks the bounds of
/// [`MaxDuration::new`], so a parsed value is always within them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "MaxDurationJson", into = "MaxDurationJson")]
pub enum MaxDuration {
    /// Every day counts; a term ending on a non-business day moves to the next business day.
    CalendarDays(u32),
    /// Only business days count (not Saturdays, Sundays or holidays).
    BusinessDays(u32),
    /// Ends on the same day number of the target month (or its last day), then moves to a business day.
    Months(u32),
}

impl MaxDuration {
    /// A maximum duration of `amount` `unit`s: 1..=3650 days, or 1..=120 months.
    pub fn new(unit: DurationUnit, amount: u32) -> Result<Self, CalendarError> {
        if !(1..=unit.max_amount()).contains(&amount) {
            return Err(CalendarError::AmountOutOfRange { unit, amount });
        }
        Ok(match unit {
            DurationUnit::CalendarDays => Self::CalendarDays(amount),
            DurationUnit::BusinessDays => Self::BusinessDays(amount),
            DurationUnit::Months => Self::Months(amount),
        })
    }

    /// The unit the duration is counted in.
    pub fn unit(&self) -> DurationUnit {
        match self {
            Self::CalendarDays(_) => DurationUnit::CalendarDays,
            Self::BusinessDays(_) => DurationUnit::BusinessDays,
            Self::Months(_) => DurationUnit::Months,
        }
    }

    /// How many units the duration lasts.
    pub fn amount(&self) -> u32 {
        match *self {
            Self::CalendarDays(n) | Self::BusinessDays(n) | Self::Months(n) => n,
        }
    }
}

/// The unit a maximum duration is counted in.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DurationUnit {
    /// Días naturales: every day counts.
    CalendarDays,
    /// Días hábiles: Saturdays, Sundays and holidays do not count.
    BusinessDays,
    /// Months, from a day to the same day number of the target month.
    Months,
}

impl DurationUnit {
    fn max_amount(self) -> u32 {
        match self {
            Self::CalendarDays | Self::BusinessDays => 3650,
            Self::Months => 120,
        }
    }
}

impl fmt::Display for DurationUnit {
    /// The unit as written in JSON (`business_days`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::CalendarDays => "calendar_days",
            Self::BusinessDays => "business_days",
            Self::Months => "months",
        })
    }
}

/// A maximum duration of a phase: 1 to 3650 calendar or business days, or 1 to 120 months.
#[derive(serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct MaxDurationJson {
    unit: DurationUnit,
    /// How many units: 1 to 3650 days, 1 to 120 months.
    #[schema(minimum = 1, maximum = 3650)]
    amount: u32,
}

impl TryFrom<MaxDurationJson> for MaxDuration {
    type Error = CalendarError;
    fn try_from(json: MaxDurationJson) -> Result<Self, Self::Error> {
        Self::new(json.unit, json.amount)
    }
}

impl From<MaxDuration> for MaxDurationJson {
    fn from(duration: MaxDuration) -> Self {
        Self {
            unit: duration.unit(),
            amount: duration.amount(),
        }
    }
}

impl PartialSchema for MaxDuration {
    /// The JSON shape `{unit, amount}` the serde implementation reads and writes.
    fn schema() -> RefOr<Schema> {
        MaxDurationJson::schema()
    }
}

impl ToSchema for MaxDuration {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("MaxDuration")
    }
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        MaxDurationJson::schemas(schemas);
    }
}

/// Non-business days besides Saturdays and Sundays (kept by admins at /bpm/holidays).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holidays(BTreeSet<NaiveDate>);

impl Holidays {
    /// The holidays among `days` (duplicates are kept once).
    pub fn new(days: impl IntoIterator<Item = NaiveDate>) -> Self {
        Self(days.into_iter().collect())
    }

    /// Whether `day` is a business day: not a Saturday, Sunday or holiday.
    pub fn is_business_day(&self, day: NaiveDate) -> bool {
        !matches!(day.weekday(), Weekday::Sat | Weekday::Sun) && !self.0.contains(&day)
    }

    /// The first business day on or after `day` (`day` itself when it is one).
    pub fn next_business_day(&self, day: NaiveDate) -> NaiveDate {
        let mut day = day;
        while !self.is_business_day(day) {
            match day.succ_opt() {
                Some(next) => day = next,
                // The end of chrono's range: nothing later to move to.
                None => break,
            }
        }
        day
    }

    fn add_business_days(&self, from: NaiveDate, amount: u32) -> NaiveDate {
        (0..amount).fold(from, |day, _| {
            self.next_business_day(day.succ_opt().unwrap_or(day))
        })
    }

    fn add_calendar_days(&self, from: NaiveDate, amount: u64) -> NaiveDate {
        self.next_business_day(
            from.checked_add_days(Days::new(amount))
                .unwrap_or(NaiveDate::MAX),
        )
    }
}

/// The due date of a phase entered on `entered_on`, following Ley 39/2015 art. 30:
/// the term counts from the day after `entered_on`; business days skip Saturdays, Sundays and holidays;
/// calendar days count every day; months end on the same day number of the target month (or its last
/// day when it has no such day); a calendar-day or month term that ends on a non-business day moves to
/// the next business day. Dates past chrono's last date stop at it.
pub fn due_date(entered_on: NaiveDate, duration: MaxDuration, holidays: &Holidays) -> NaiveDate {
    match duration {
        MaxDuration::BusinessDays(n) => holidays.add_business_days(entered_on, n),
        MaxDuration::CalendarDays(n) => holidays.add_calendar_days(entered_on, n.into()),
        // chrono clamps to the last day of a month that has no such day number (31 Jan -> 28/29 Feb).
        MaxDuration::Months(n) => holidays.next_business_day(
            entered_on
                .checked_add_months(Months::new(n))
                .unwrap_or(NaiveDate::MAX),
        ),
    }
}

/// The due date after the clock was suspended on `suspended_on` and resumed on `resumed_on`
/// (the suspended days do not count): the part of the term left on `suspended_on` runs again from
/// `resumed_on`, counted in the term's own unit (business days left stay business days; for calendar
/// days and months, the calendar days left), then moved to a business day as `due_date` does.
///
/// The part left is the days after `suspended_on` up to `due` inclusive, so it still holds when the
/// clock is resumed after `due`. Nothing changes when the clock is resumed the day it was suspended
/// (or, nonsensically, before), nor when it was suspended on or after `due`: no part of the term was left.
pub fn resumed_due_date(
    due: NaiveDate,
    unit: DurationUnit,
    suspended_on: NaiveDate,
    resumed_on: NaiveDate,
    holidays: &Holidays,
) -> NaiveDate {
    if resumed_on <= suspended_on || suspended_on >= due {
        return due;
    }
    match unit {
        DurationUnit::BusinessDays => {
            let left = suspended_on
                .iter_days()
                .skip(1)
                .take_while(|day| *day <= due)
                .filter(|day| holidays.is_business_day(*day))
                .count();
            holidays.add_business_days(resumed_on, u32::try_from(left).unwrap_or(u32::MAX))
        }
        DurationUnit::CalendarDays | DurationUnit::Months => {
            let left = (due - suspended_on).num_days();
            holidays.add_calendar_days(resumed_on, u64::try_from(left).unwrap_or(0))
        }
    }
}

/// The due date after an extension by `extra`, counted from the current due date (same rules as due_date).
pub fn extended_due_date(due: NaiveDate, extra: MaxDuration, holidays: &Holidays) -> NaiveDate {
    due_date(due, extra, holidays)
}

/// Whether a phase due on `due` is due soon on `today`: `today` is before `due` and at most `days_before`
/// calendar days before it.
pub fn due_soon(due: NaiveDate, today: NaiveDate, days_before: u32) -> bool {
    today < due && (due - today).num_days() <= i64::from(days_before)
}

/// Whether it is overdue on `today` (today > due).
pub fn overdue(due: NaiveDate, today: NaiveDate) -> bool {
    today > due
}

/// Why a maximum duration was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CalendarError {
    /// The amount is 0 or more than the unit allows (3650 days, 120 months).
    #[error("a maximum duration in {unit} must be between 1 and {max}, not {amount}", max = .unit.max_amount())]
    AmountOutOfRange {
        /// The unit asked for.
        unit: DurationUnit,
        /// The amount refused.
        amount: u32,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }
    fn business(n: u32) -> MaxDuration {
        MaxDuration::new(DurationUnit::BusinessDays, n).unwrap()
    }
    fn calendar(n: u32) -> MaxDuration {
        MaxDuration::new(DurationUnit::CalendarDays, n).unwrap()
    }
    fn months(n: u32) -> MaxDuration {
        MaxDuration::new(DurationUnit::Months, n).unwrap()
    }
    /// `due_date` with no holidays but Saturdays and Sundays.
    fn due(entered_on: NaiveDate, duration: MaxDuration) -> NaiveDate {
        due_date(entered_on, duration, &Holidays::default())
    }
    /// `resumed_due_date` with no holidays but Saturdays and Sundays.
    fn resume(
        due: NaiveDate,
        unit: DurationUnit,
        suspended: NaiveDate,
        resumed: NaiveDate,
    ) -> NaiveDate {
        resumed_due_date(due, unit, suspended, resumed, &Holidays::default())
    }

    #[test]
    fn saturdays_sundays_and_holidays_are_not_business_days() {
        let holidays = Holidays::new([d(2025, 3, 19)]);
        assert!(holidays.is_business_day(d(2025, 3, 14))); // Friday
        assert!(!holidays.is_business_day(d(2025, 3, 15))); // Saturday
        assert!(!holidays.is_business_day(d(2025, 3, 16))); // Sunday
        assert!(!holidays.is_business_day(d(2025, 3, 19))); // Wednesday, a holiday
        assert!(Holidays::default().is_business_day(d(2025, 3, 19)));
    }

    #[test]
    fn next_business_day_is_the_day_itself_or_the_first_after_weekends_and_holidays() {
        let holidays = Holidays::new([d(2025, 12, 8)]);
        assert_eq!(holidays.next_business_day(d(2025, 12, 5)), d(2025, 12, 5));
        // Saturday 6 (Constitución), Sunday 7, Monday 8 a holiday -> Tuesday 9.
        assert_eq!(holidays.next_business_day(d(2025, 12, 6)), d(2025, 12, 9));
    }

    #[test]
    fn ten_business_days_from_a_friday_end_on_the_second_friday() {
        // Given a phase entered on Friday 7 March 2025, when it lasts 10 business days,
        // then Mon 10..Fri 14 and Mon 17..Fri 21 count: due Friday 21.
        assert_eq!(due(d(2025, 3, 7), business(10)), d(2025, 3, 21));
    }

    #[test]
    fn a_holiday_inside_a_business_day_term_adds_one_day() {
        let holidays = Holidays::new([d(2025, 3, 19)]);
        assert_eq!(
            due_date(d(2025, 3, 7), business(10), &holidays),
            d(2025, 3, 24)
        );
    }

    #[test]
    fn a_business_day_term_entered_on_a_weekend_starts_counting_on_monday() {
        assert_eq!(due(d(2025, 3, 8), business(1)), d(2025, 3, 10));
        assert_eq!(due(d(2025, 3, 8), business(5)), d(2025, 3, 14));
    }

    #[test]
    fn a_business_day_term_crosses_the_year_end_skipping_christmas_and_epiphany() {
        let holidays = Holidays::new([d(2025, 12, 25), d(2026, 1, 1), d(2026, 1, 6)]);
        // Tue 23, Wed 24, Fri 26, Mon 29, Tue 30, Wed 31, Fri 2, Mon 5, Wed 7, Thu 8.
        assert_eq!(
            due_date(d(2025, 12, 22), business(10), &holidays),
            d(2026, 1, 8)
        );
    }

    #[test]
    fn a_calendar_day_term_counts_every_day_from_the_day_after_entry() {
        assert_eq!(due(d(2025, 3, 3), calendar(10)), d(2025, 3, 13));
        assert_eq!(due(d(2025, 3, 3), calendar(1)), d(2025, 3, 4));
    }

    #[test]
    fn a_calendar_day_term_ending_on_a_saturday_moves_to_monday() {
        assert_eq!(due(d(2025, 3, 5), calendar(10)), d(2025, 3, 17));
    }

    #[test]
    fn a_calendar_day_term_ending_on_a_holiday_moves_past_it_and_the_weekend() {
        // Good Friday 18 April and Easter Monday 21 April 2025.
        let holidays = Holidays::new([d(2025, 4, 18), d(2025, 4, 21)]);
        assert_eq!(
            due_date(d(2025, 4, 8), calendar(10), &holidays),
            d(2025, 4, 22)
        );
    }

    #[test]
    fn a_calendar_day_term_crosses_a_month_end() {
        assert_eq!(due(d(2025, 1, 25), calendar(10)), d(2025, 2, 4));
    }

    #[test]
    fn a_month_term_ends_on_the_same_day_number_of_the_target_month() {
        assert_eq!(due(d(2025, 3, 14), months(1)), d(2025, 4, 14));
    }

    #[test]
    fn a_month_term_from_a_day_the_target_month_lacks_ends_on_its_last_day() {
        assert_eq!(due(d(2025, 1, 31), months(1)), d(2025, 2, 28));
        assert_eq!(due(d(2024, 1, 31), months(1)), d(2024, 2, 29)); // leap year
        assert_eq!(due(d(2024, 2, 29), months(12)), d(2025, 2, 28));
    }

    #[test]
    fn a_month_term_from_december_ends_in_the_next_year() {
        assert_eq!(due(d(2024, 12, 10), months(1)), d(2025, 1, 10));
        assert_eq!(due(d(2024, 12, 31), months(2)), d(2025, 2, 28));
    }

    #[test]
    fn a_month_term_ending_on_a_non_business_day_moves_to_the_next_business_day() {
        assert_eq!(due(d(2025, 1, 15), months(1)), d(2025, 2, 17)); // Saturday 15 -> Monday 17
        let holidays = Holidays::new([d(2025, 12, 6), d(2025, 12, 8)]);
        assert_eq!(
            due_date(d(2025, 11, 6), months(1), &holidays),
            d(2025, 12, 9)
        );
    }

    #[test]
    fn suspended_and_resumed_on_the_same_day_changes_nothing() {
        let holidays = Holidays::new([d(2025, 3, 19)]);
        let due = d(2025, 3, 24);
        for unit in [
            DurationUnit::BusinessDays,
            DurationUnit::CalendarDays,
            DurationUnit::Months,
        ] {
            let same_day = d(2025, 3, 12);
            assert_eq!(
                resumed_due_date(due, unit, same_day, same_day, &holidays),
                due
            );
        }
    }

    #[test]
    fn a_business_day_term_suspended_across_a_weekend_loses_no_business_day() {
        // Given 10 business days from Fri 7 March (due Fri 21), when suspended on Wed 12 (7 left:
        // Thu 13, Fri 14, Mon 17..Fri 21) and resumed on Mon 17, then Tue 18..Wed 26 count.
        let due = due(d(2025, 3, 7), business(10));
        let (unit, suspended) = (DurationUnit::BusinessDays, d(2025, 3, 12));
        assert_eq!(resume(due, unit, suspended, d(2025, 3, 17)), d(2025, 3, 26));
        // With a holiday in the stretch run again, one more day.
        let holidays = Holidays::new([d(2025, 3, 24)]);
        let resumed = resumed_due_date(due, unit, suspended, d(2025, 3, 17), &holidays);
        assert_eq!(resumed, d(2025, 3, 27));
        // Resumed on a Saturday: counting starts on Monday.
        assert_eq!(resume(due, unit, suspended, d(2025, 3, 15)), d(2025, 3, 25));
    }

    #[test]
    fn business_days_left_at_suspension_skip_the_holidays_before_the_due_date() {
        // Due Mon 24 with Wed 19 a holiday; suspended Tue 18: Thu 20, Fri 21, Mon 24 are left.
        let holidays = Holidays::new([d(2025, 3, 19)]);
        let due = due_date(d(2025, 3, 7), business(10), &holidays);
        let unit = DurationUnit::BusinessDays;
        let resumed = resumed_due_date(due, unit, d(2025, 3, 18), d(2025, 3, 25), &holidays);
        assert_eq!(resumed, d(2025, 3, 28));
    }

    #[test]
    fn a_calendar_day_term_suspended_across_a_month_end_runs_the_calendar_days_left() {
        // 20 days from Mon 20 Jan end on Sun 9 Feb -> Mon 10; suspended Thu 30 Jan: 11 days left.
        let due = due(d(2025, 1, 20), calendar(20));
        assert_eq!(due, d(2025, 2, 10));
        let (unit, suspended) = (DurationUnit::CalendarDays, d(2025, 1, 30));
        assert_eq!(resume(due, unit, suspended, d(2025, 2, 3)), d(2025, 2, 14));
        // Ending on Saturday 15 moves to Monday 17.
        assert_eq!(resume(due, unit, suspended, d(2025, 2, 4)), d(2025, 2, 17));
    }

    #[test]
    fn a_month_term_suspended_runs_the_calendar_days_left_across_february() {
        // 1 month from 31 Jan ends Fri 28 Feb; suspended Thu 20 (8 days left), resumed Tue 25.
        let due = due(d(2025, 1, 31), months(1));
        let resumed = resume(due, DurationUnit::Months, d(2025, 2, 20), d(2025, 2, 25));
        assert_eq!(resumed, d(2025, 3, 5));
    }

    #[test]
    fn resumed_after_the_due_date_passed_still_runs_the_days_left_at_suspension() {
        // Business days: due Fri 21, suspended Wed 19 (Thu 20, Fri 21 left), resumed Mon 7 April.
        let unit = DurationUnit::BusinessDays;
        assert_eq!(
            resume(d(2025, 3, 21), unit, d(2025, 3, 19), d(2025, 4, 7)),
            d(2025, 4, 9)
        );
        // Calendar days: due Thu 13, suspended Mon 10 (3 left), resumed Mon 31 March.
        let unit = DurationUnit::CalendarDays;
        assert_eq!(
            resume(d(2025, 3, 13), unit, d(2025, 3, 10), d(2025, 3, 31)),
            d(2025, 4, 3)
        );
    }

    #[test]
    fn suspended_on_or_after_the_due_date_leaves_nothing_to_run_again() {
        let due = d(2025, 3, 21);
        for suspended in [due, d(2025, 3, 25)] {
            let resumed = resume(due, DurationUnit::BusinessDays, suspended, d(2025, 4, 7));
            assert_eq!(resumed, due);
        }
    }

    #[test]
    fn an_extension_counts_from_the_current_due_date_with_the_same_rules() {
        let due = d(2025, 3, 21); // a Friday
        let no_holidays = Holidays::default();
        assert_eq!(
            extended_due_date(due, business(5), &no_holidays),
            d(2025, 3, 28)
        );
        let holidays = Holidays::new([d(2025, 3, 24)]);
        assert_eq!(
            extended_due_date(due, business(5), &holidays),
            d(2025, 3, 31)
        );
        // 9 calendar days end on Sunday 30 -> Monday 31.
        assert_eq!(
            extended_due_date(due, calendar(9), &no_holidays),
            d(2025, 3, 31)
        );
        assert_eq!(
            extended_due_date(d(2025, 1, 31), months(1), &no_holidays),
            d(2025, 2, 28)
        );
    }

    #[test]
    fn due_soon_only_before_the_due_date_and_within_the_days_before() {
        let due = d(2025, 3, 21);
        assert!(due_soon(due, d(2025, 3, 18), 3));
        assert!(due_soon(due, d(2025, 3, 20), 3));
        assert!(!due_soon(due, d(2025, 3, 17), 3));
        assert!(!due_soon(due, due, 3));
        assert!(!due_soon(due, d(2025, 3, 22), 3));
        assert!(!due_soon(due, d(2025, 3, 20), 0));
    }

    #[test]
    fn overdue_only_after_the_due_day() {
        let due = d(2025, 3, 21);
        assert!(!overdue(due, d(2025, 3, 20)));
        assert!(!overdue(due, due));
        assert!(overdue(due, d(2025, 3, 22)));
    }

    #[test]
    fn max_duration_new_accepts_its_bounds_and_refuses_zero_and_more() {
        use DurationUnit::*;
        for (unit, max) in [(CalendarDays, 3650), (BusinessDays, 3650), (Months, 120)] {
            for amount in [1, max] {
                let duration = MaxDuration::new(unit, amount).unwrap();
                assert_eq!((duration.unit(), duration.amount()), (unit, amount));
            }
            for amount in [0, max + 1] {
                let refused = Err(CalendarError::AmountOutOfRange { unit, amount });
                assert_eq!(MaxDuration::new(unit, amount), refused);
            }
        }
        assert_eq!(
            MaxDuration::new(Months, 121).unwrap_err().to_string(),
            "a maximum duration in months must be between 1 and 120, not 121"
        );
    }

    #[test]
    fn max_duration_json_is_unit_and_amount_and_round_trips() {
        for duration in [calendar(30), business(10), months(3)] {
            let value = serde_json::to_value(duration).unwrap();
            let unit = duration.unit().to_string();
            assert_eq!(value, json!({"unit": unit, "amount": duration.amount()}));
            assert_eq!(
                serde_json::from_value::<MaxDuration>(value).unwrap(),
                duration
            );
        }
        let parsed = serde_json::from_str::<MaxDuration>(r#"{"unit":"business_days","amount":10}"#);
        assert_eq!(parsed.unwrap(), MaxDuration::BusinessDays(10));
    }

    #[test]
    fn max_duration_json_refuses_bad_units_missing_fields_and_amounts_out_of_range() {
        for bad in [
            json!({"unit": "weeks", "amount": 2}),
            json!({"unit": "business_days"}),
            json!({"amount": 10}),
            json!({"unit": "business_days", "amount": 0}),
            json!({"unit": "months", "amount": 121}),
            json!({"unit": "calendar_days", "amount": -1}),
            json!({"unit": "calendar_days", "amount": "10"}),
            json!({"unit": "calendar_days", "amount": 10, "extra": 1}),
            json!({"BusinessDays": 10}),
        ] {
            let parsed = serde_json::from_value::<MaxDuration>(bad.clone());
            assert!(parsed.is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn max_duration_schema_is_an_object_with_a_unit_enum_and_an_amount_from_1() {
        assert_eq!(MaxDuration::name(), "MaxDuration");
        let schema = serde_json::to_value(MaxDuration::schema()).unwrap();
        assert_eq!(schema["type"], "object");
        assert_eq!(schema["required"], json!(["unit", "amount"]));
        let unit_ref = &schema["properties"]["unit"]["$ref"];
        assert_eq!(unit_ref, "#/components/schemas/DurationUnit");
        assert_eq!(schema["properties"]["amount"]["type"], "integer");
        assert_eq!(schema["properties"]["amount"]["minimum"], 1);
        let mut referenced = Vec::new();
        MaxDuration::schemas(&mut referenced);
        let (name, unit) = referenced.first().expect("DurationUnit is referenced");
        assert_eq!(name, "DurationUnit");
        let units = json!(["calendar_days", "business_days", "months"]);
        assert_eq!(serde_json::to_value(unit).unwrap()["enum"], units);
    }
}
