//! The sale rules, each broken on its own.

use super::*;

fn clock_now() -> DateTime<Utc> {
    crate::clock::LocalClock::default().now()
}

fn spec() -> CreateSale {
    let now = clock_now();
    CreateSale {
        name: "Sneakers".into(),
        price_cents: 9_900,
        currency: "EUR".into(),
        total: 100,
        per_user_limit: 2,
        starts_at: now,
        ends_at: now + chrono::Duration::hours(1),
        hold_seconds: 120,
        waitlist_enabled: true,
        lobby_opens_at: None,
        admit_per_second: 100,
        admission_seconds: 120,
        payment: PaymentMode::None,
        payment_seconds: DEFAULT_PAYMENT_SECONDS,
        cancel_seconds: 0,
    }
}

#[test]
fn a_good_sale_passes() {
    validate(&spec(), clock_now()).unwrap();
}

#[test]
fn each_rule_is_enforced_with_a_message_naming_the_field() {
    let now = clock_now();
    type Breaker = Box<dyn Fn(&mut CreateSale)>;
    let cases: Vec<(&str, Breaker)> = vec![
        ("name", Box::new(|s| s.name = " ".into())),
        ("name", Box::new(|s| s.name = "x".repeat(201).into())),
        ("price_cents", Box::new(|s| s.price_cents = -1)),
        (
            "price_cents",
            Box::new(|s| s.price_cents = MAX_PRICE_CENTS + 1),
        ),
        ("currency", Box::new(|s| s.currency = "eur".into())),
        ("total", Box::new(|s| s.total = 0)),
        ("total", Box::new(|s| s.total = MAX_TOTAL + 1)),
        ("per_user_limit", Box::new(|s| s.per_user_limit = 101)),
        ("per_user_limit", Box::new(|s| s.per_user_limit = 0)),
        ("starts_at", Box::new(|s| s.starts_at = s.ends_at)),
        (
            "ends_at",
            Box::new(|s| {
                s.starts_at = clock_now() - chrono::Duration::hours(2);
                s.ends_at = clock_now() - chrono::Duration::hours(1);
            }),
        ),
        ("hold_seconds", Box::new(|s| s.hold_seconds = 0)),
        (
            "hold_seconds",
            Box::new(|s| s.hold_seconds = MAX_HOLD_SECONDS + 1),
        ),
    ];
    for (field, break_it) in cases {
        let mut s = spec();
        break_it(&mut s);
        let err = validate(&s, now).unwrap_err();
        assert!(err.to_string().contains(field), "{field}: {err}");
    }
}
