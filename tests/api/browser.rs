//! The buyer and operator pages in a real browser: Debian's chromium driven
//! through chromium-driver (WebDriver). Each test saves screenshots under
//! `target/screenshots/`.

use std::{
    process::{Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, admin_token, buyer_token, die_with_parent, free_port, hold, lasting, spawn_app,
    wait_for_port,
};

/// One chromedriver for the whole run (a child of a thread that lasts as
/// long as the test binary); every test opens its own session.
fn driver_url() -> &'static str {
    static DRIVER: OnceLock<&'static String> = OnceLock::new();
    DRIVER.get_or_init(|| {
        lasting(|| {
            let port = free_port();
            let child = die_with_parent(
                Command::new("chromedriver")
                    .arg(format!("--port={port}"))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            )
            .spawn()
            .expect("chromedriver is installed (scripts/test installs chromium-driver)");
            std::mem::forget(child);
            wait_for_port(port, "chromedriver");
            format!("http://127.0.0.1:{port}")
        })
    })
}

async fn browser(width: u32, height: u32) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            format!("--window-size={width},{height}"),
        ]}),
    );
    // chromedriver speaks plain HTTP on loopback: no TLS needed.
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(driver_url())
        .await
        .expect("a chromium session")
}

/// Saves what the browser shows now as `target/screenshots/<name>.png`.
async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

/// Waits until the element's text is `want`; panics with what it showed.
async fn text_becomes(client: &Client, css: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = String::new();
    while Instant::now() < deadline {
        if let Ok(el) = client.find(Locator::Css(css)).await {
            seen = el.text().await.unwrap_or_default();
            if seen.trim() == want {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{css} shows {seen:?}, never {want:?}");
}

/// The element's text now.
async fn text_of(client: &Client, css: &str) -> String {
    client
        .find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Waits until the element is displayed.
async fn shown(client: &Client, css: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(el) = client.find(Locator::Css(css)).await
            && el.is_displayed().await.unwrap_or(false)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{css} never shown");
}

async fn click(client: &Client, css: &str) {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap();
}

/// Opens a `<details>` by its summary, as a buyer does: the lobby card's
/// figures change every second and can move the summary under a click
/// (CI saw the check's button stay hidden in a closed `<details>`), so
/// the summary is clicked again while the details stays closed.
async fn open_details(client: &Client, css: &str) {
    let details = client.find(Locator::Css(css)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while details.attr("open").await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "{css} never opened");
        click(client, &format!("{css} summary")).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn fill(client: &Client, css: &str, value: &str) {
    let el = client.find(Locator::Css(css)).await.unwrap();
    el.clear().await.unwrap();
    el.send_keys(value).await.unwrap();
}

async fn open(client: &Client, app: &TestApp, path: &str, token: Option<&str>) {
    let fragment = token.map(|t| format!("#token={t}")).unwrap_or_default();
    client
        .goto(&format!("{}{fragment}", app.url(path)))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_buyer_reserves_and_confirms_through_the_page() {
    let app = spawn_app().await;
    let sale = app
        .create_sale(json!({"name": "Trail runners", "total": 10, "per_user_limit": 2}))
        .await;
    let client = browser(1280, 900).await;
    open(&client, &app, "/", None).await;
    text_becomes(
        &client,
        &format!("#sales a[href='/sales/{sale}']"),
        "Trail runners",
    )
    .await;
    screenshot(&client, "buyer-list").await;

    open(
        &client,
        &app,
        &format!("/sales/{sale}"),
        Some(&buyer_token("page-buyer")),
    )
    .await;
    text_becomes(&client, "#available", "10").await;
    // The token left the address bar; the page keeps it for the tab.
    assert!(
        !client
            .current_url()
            .await
            .unwrap()
            .as_str()
            .contains("token=")
    );
    fill(&client, "#quantity", "2").await;
    click(&client, "#reserve-btn").await;
    shown(&client, "#hold-card").await;
    text_becomes(&client, "#held", "2").await;
    // Counts in words as people write them.
    text_becomes(&client, "#message", "Held 2 units. Confirm to buy.").await;
    text_becomes(&client, "#hold-units", "2 units").await;
    let countdown = client.find(Locator::Css("#hold-countdown")).await.unwrap();
    assert!(countdown.text().await.unwrap().ends_with("left"));
    screenshot(&client, "buyer-hold").await;

    click(&client, "#confirm-btn").await;
    shown(&client, "#order-card").await;
    text_becomes(&client, "#sold", "2").await;
    let summary = text_of(&client, "#order-summary").await;
    assert!(
        summary.starts_with("2 units, serials "),
        "the order reads {summary:?}"
    );
    screenshot(&client, "buyer-order").await;
    // What the page showed is what the stores hold.
    let orders = app.orders(&sale).await;
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0].user_id, "page-buyer");
    assert_eq!(orders[0].quantity, 2);
    let (available, held, sold) = app.check_invariants(&sale).await;
    assert_eq!((available, held, sold), (8, 0, 2));
    client.close().await.unwrap();
}

/// A sale that takes payment: the hold's step is Pay, the deadline moves
/// out, and the provider's webhook turns it into the order on the page.
#[tokio::test]
async fn a_buyer_pays_through_the_page_and_the_webhook_places_the_order() {
    let app = spawn_app().await;
    let sale = crate::payments::payment_sale(&app, json!({"name": "Paid drop", "total": 4})).await;
    let client = browser(1280, 900).await;
    open(
        &client,
        &app,
        &format!("/sales/{sale}"),
        Some(&buyer_token("page-payer")),
    )
    .await;
    text_becomes(&client, "#available", "4").await;
    fill(&client, "#quantity", "1").await;
    click(&client, "#reserve-btn").await;
    shown(&client, "#hold-card").await;
    text_becomes(&client, "#confirm-btn", "Pay").await;
    click(&client, "#confirm-btn").await;
    shown(&client, "#payment-box").await;
    text_becomes(&client, "#confirm-btn", "Waiting for payment…").await;
    let payment = text_of(&client, "#payment-id").await;
    assert!(payment.starts_with("pay_"), "{payment}");
    let countdown = text_of(&client, "#hold-countdown").await;
    assert!(
        countdown.starts_with('4') || countdown.starts_with('5'),
        "the extended deadline: {countdown}"
    );
    screenshot(&client, "buyer-paying").await;

    let intent = json!({"payment_id": payment, "amount_cents": 2_500, "currency": "EUR"});
    let answer = crate::payments::deliver(
        &app,
        &crate::payments::event("evt-page", &intent, "succeeded"),
    )
    .await;
    assert_eq!(answer.status(), 200);
    shown(&client, "#order-card").await;
    text_becomes(&client, "#sold", "1").await;
    screenshot(&client, "buyer-paid").await;
    let orders = app.orders(&sale).await;
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0].payment_id.as_deref(), Some(payment.as_str()));
    app.check_invariants(&sale).await;
    client.close().await.unwrap();
}

#[tokio::test]
async fn the_counts_on_the_page_move_when_another_buyer_reserves() {
    let app = spawn_app().await;
    let sale = app
        .create_sale(json!({"total": 10, "per_user_limit": 3}))
        .await;
    let client = browser(390, 844).await;
    open(&client, &app, &format!("/sales/{sale}"), None).await;
    text_becomes(&client, "#available", "10").await;
    // Not signed in: the page says so rather than failing on click.
    let reserve = client.find(Locator::Css("#reserve-btn")).await.unwrap();
    assert!(!reserve.is_enabled().await.unwrap());

    let rid = hold(&app, &sale, "elsewhere", 3).await;
    text_becomes(&client, "#available", "7").await;
    text_becomes(&client, "#held", "3").await;
    screenshot(&client, "buyer-phone").await;
    assert_eq!(app.confirm(&rid, "elsewhere").await.status(), 201);
    text_becomes(&client, "#sold", "3").await;
    text_becomes(&client, "#held", "0").await;
    client.close().await.unwrap();
}

#[tokio::test]
async fn a_waiting_buyer_sees_the_promotion_and_confirms_it() {
    let app = spawn_app().await;
    let sale = app
        .create_sale(json!({"total": 1, "per_user_limit": 1}))
        .await;
    let first = hold(&app, &sale, "first", 1).await;
    let client = browser(1280, 900).await;
    open(
        &client,
        &app,
        &format!("/sales/{sale}"),
        Some(&buyer_token("patient")),
    )
    .await;
    text_becomes(&client, "#sale-status", "sold out").await;
    shown(&client, "#join-btn").await;
    click(&client, "#join-btn").await;
    shown(&client, "#wait-card").await;
    text_becomes(&client, "#wait-position", "1").await;
    text_becomes(&client, "#waitlist-length", "1").await;
    screenshot(&client, "buyer-waiting").await;

    // The first buyer lets go: the unit goes to the head of the line.
    assert_eq!(app.cancel(&first, "first").await.status(), 204);
    shown(&client, "#hold-card").await;
    screenshot(&client, "buyer-promoted").await;
    click(&client, "#confirm-btn").await;
    shown(&client, "#order-card").await;
    let orders = app.orders(&sale).await;
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0].user_id, "patient");
    let (available, held, sold) = app.check_invariants(&sale).await;
    assert_eq!((available, held, sold), (0, 0, 1));
    client.close().await.unwrap();
}

#[tokio::test]
async fn the_operator_creates_a_sale_and_sees_its_chart_move() {
    let app = spawn_app().await;
    let client = browser(1400, 1000).await;
    open(&client, &app, "/operator", Some(&admin_token())).await;
    shown(&client, "#create-form").await;
    fill(&client, "#c-name", "Operator drop").await;
    fill(&client, "#c-total", "50").await;
    fill(&client, "#c-limit", "5").await;
    // Opens at once: a start a minute back (the field has minutes only).
    let start = chrono::Local::now() - chrono::Duration::minutes(1);
    client
        .execute(
            "document.querySelector('#c-starts').value = arguments[0]",
            vec![Value::from(start.format("%Y-%m-%dT%H:%M").to_string())],
        )
        .await
        .unwrap();
    click(&client, "#create-btn").await;
    shown(&client, "#detail").await;
    text_becomes(&client, "#d-name", "Operator drop").await;
    let sale = text_of(&client, "#d-id").await;
    // The sale the page made is the sale the server holds.
    let view = app.get_sale(&sale).await;
    assert_eq!(view["name"], "Operator drop");
    assert_eq!(view["total"], 50);
    text_becomes(&client, "#available", "50").await;
    let points_before = chart_points(&client).await;
    record_chart_labels(&client).await;

    for i in 0..4 {
        let rid = hold(&app, &sale, &format!("chart-{i}"), 2).await;
        if i % 2 == 0 {
            assert_eq!(app.confirm(&rid, &format!("chart-{i}")).await.status(), 201);
        }
    }
    text_becomes(&client, "#available", "42").await;
    text_becomes(&client, "#sold", "4").await;
    assert!(chart_points(&client).await > points_before);
    // The scale reads true: round, evenly spaced values, up to at least
    // the sale's 50 units.
    let labels = chart_labels(&client).await;
    assert_round_scale(&labels, 50);
    // The summary and the orders come from the server too.
    text_becomes(&client, "[data-figure=units_sold] b", "4").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while client
        .find_all(Locator::Css("#orders tr"))
        .await
        .unwrap()
        .len()
        < 2
    {
        assert!(Instant::now() < deadline, "the orders table never filled");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    screenshot(&client, "operator").await;

    // Cancel an order from the page: its units come back.
    click(&client, "#orders button[data-cancel]").await;
    client.accept_alert().await.unwrap();
    text_becomes(&client, "[data-figure=orders_cancelled] b", "1").await;
    text_becomes(&client, "#available", "44").await;
    let cancelled = text_of(&client, "#orders td span.muted").await;
    assert_eq!(cancelled, "cancelled: cancelled by the shop");
    assert_eq!(
        app.orders(&sale).await.len(),
        1,
        "one order left in the sale"
    );
    app.check_invariants(&sale).await;
    screenshot(&client, "operator-cancelled").await;

    // Close it from the page.
    click(&client, "#close-btn").await;
    client.accept_alert().await.unwrap();
    text_becomes(&client, "#d-status", "ended").await;
    assert_eq!(app.get_sale(&sale).await["status"], "ended");
    client.close().await.unwrap();
}

#[tokio::test]
async fn the_operator_and_the_buyer_open_the_sales_past_the_first_page() {
    use futures::{StreamExt, stream};
    let app = spawn_app().await;
    let mut created: Vec<String> = stream::iter(0..101)
        .map(|_| app.create_sale(json!({})))
        .buffer_unordered(8)
        .collect()
        .await;
    created.sort();
    let mut stored: Vec<String> = app
        .mongo
        .list_sales(1_000)
        .await
        .unwrap()
        .into_iter()
        .map(|sale| sale.id)
        .collect();
    stored.sort();
    assert_eq!(created, stored);
    let client = browser(1400, 1000).await;
    for (page, token, name) in [
        ("/operator", Some(admin_token()), "operator-all-sales"),
        ("/", None, "buyer-all-sales"),
    ] {
        open(&client, &app, page, token.as_deref()).await;
        let listed = every_sale_listed(&client, name).await;
        assert_eq!(listed, stored, "{page}: every sale MongoDB holds, once");
    }
    client.close().await.unwrap();
}

/// Every sale the page's list shows: a page of 100, then the button for
/// the rest (its screenshot `name`), until the button is gone.
async fn every_sale_listed(client: &Client, name: &str) -> Vec<String> {
    shown(client, "#more-sales").await;
    assert_eq!(listed_sales(client).await.len(), 100);
    client
        .execute(
            "document.querySelector('#more-sales').scrollIntoView({block: 'center'})",
            vec![],
        )
        .await
        .unwrap();
    screenshot(client, name).await;
    click(client, "#more-sales").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut listed = listed_sales(client).await;
    while listed.len() < 101 {
        assert!(Instant::now() < deadline, "{} sales listed", listed.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
        listed = listed_sales(client).await;
    }
    assert!(
        client.find(Locator::Css("#more-sales")).await.is_err(),
        "no more sales to open"
    );
    listed.sort();
    listed
}

/// The sales the page's list shows, by id.
async fn listed_sales(client: &Client) -> Vec<String> {
    let ids = client
        .execute(
            "return [...document.querySelectorAll('#sales [data-sale]')].map((b) => b.dataset.sale)",
            vec![],
        )
        .await
        .unwrap();
    serde_json::from_value(ids).unwrap()
}

/// From now on, the numbers the operator's chart writes on its canvas are
/// kept in `window.chartLabels`, those of its latest drawing only.
async fn record_chart_labels(client: &Client) {
    client
        .execute(
            "const fill = CanvasRenderingContext2D.prototype.fillText;
             const clear = CanvasRenderingContext2D.prototype.clearRect;
             window.chartLabels = [];
             CanvasRenderingContext2D.prototype.clearRect = function (...a) {
               window.chartLabels = []; return clear.apply(this, a); };
             CanvasRenderingContext2D.prototype.fillText = function (text, ...a) {
               if (/^\\d+$/.test(text)) window.chartLabels.push(Number(text));
               return fill.call(this, text, ...a); };",
            vec![],
        )
        .await
        .unwrap();
}

async fn chart_labels(client: &Client) -> Vec<i64> {
    let labels = client
        .execute("return window.chartLabels", vec![])
        .await
        .unwrap();
    serde_json::from_value(labels).unwrap()
}

/// Labels from 0 in equal steps of 1, 2 or 5 times a power of ten, the
/// last at least `covers`.
fn assert_round_scale(labels: &[i64], covers: i64) {
    assert!(labels.len() >= 2, "the chart wrote no scale: {labels:?}");
    let step = labels[1] - labels[0];
    let mut unit = 1;
    while unit * 10 <= step {
        unit *= 10;
    }
    assert!(
        labels[0] == 0 && [1, 2, 5].contains(&(step / unit)) && step % unit == 0,
        "the scale is not in round steps: {labels:?}"
    );
    assert!(
        labels.windows(2).all(|w| w[1] - w[0] == step),
        "the scale's steps are not equal: {labels:?}"
    );
    assert!(
        *labels.last().unwrap() >= covers,
        "the scale stops below {covers}: {labels:?}"
    );
}

/// The new-sale form as laid out across the page (no sale open): every
/// field shows its whole value, and the waiting list's checkbox sits on
/// its label's line.
async fn new_sale_form_fits(client: &Client) {
    let layout = client
        .execute(
            "// A date field's text is not in its scroll width: measure it as
             // shown (the browser's locale), and its picker icon.
             const g = document.createElement('canvas').getContext('2d');
             const shown = (i) => new Date(i.value).toLocaleString(undefined, {year: 'numeric',
               month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit'});
             const needs = (i) => {
               if (i.type !== 'datetime-local') return i.scrollWidth;
               g.font = getComputedStyle(i).font;
               return g.measureText(shown(i)).width + 24;
             };
             const room = (i) => {
               const style = getComputedStyle(i);
               return i.clientWidth - (i.type === 'datetime-local'
                 ? parseFloat(style.paddingLeft) + parseFloat(style.paddingRight) : 0);
             };
             const cut = [...document.querySelectorAll('#create-form input:not([type=checkbox])')]
               .filter((i) => needs(i) > room(i))
               .map((i) => `${i.id}: ${Math.ceil(needs(i))} px of value in ${room(i)}`);
             const box = document.querySelector('#c-waitlist').getBoundingClientRect();
             const label = document.querySelector('label[for=c-waitlist]').getBoundingClientRect();
             return {cut, box: [box.width, box.height], label: label.height};",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(layout["cut"], json!([]), "fields cut short: {layout}");
    let (box_width, label_height) = (
        layout["box"][0].as_f64().unwrap(),
        layout["label"].as_f64().unwrap(),
    );
    assert!(
        box_width < 2.0 * layout["box"][1].as_f64().unwrap() && label_height < 40.0,
        "the checkbox is not on its label's line: {layout}"
    );
}

async fn chart_points(client: &Client) -> usize {
    let canvas = client.find(Locator::Css("#chart")).await.unwrap();
    canvas
        .attr("data-points")
        .await
        .unwrap()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_lobby_buyer_joins_checks_the_draw_and_buys_when_let_in() {
    use crate::lobbies::{draw, hmac_hex, join_lobby, lobby_sale, start_in};
    let app = spawn_app().await;
    let sale = lobby_sale(
        &app,
        json!({"name": "Fair drop", "total": 5, "per_user_limit": 1, "admit_per_second": 1}),
    )
    .await;
    for other in ["lobby-a", "lobby-b"] {
        assert_eq!(join_lobby(&app, &sale, other).await.status(), 201);
    }
    let client = browser(1280, 1100).await;
    open(
        &client,
        &app,
        &format!("/sales/{sale}"),
        Some(&buyer_token("lobby-page")),
    )
    .await;
    shown(&client, "#lobby-card").await;
    text_becomes(&client, "#lobby-length", "2").await;
    // Not let in yet: the page does not offer to reserve.
    let reserve = client.find(Locator::Css("#reserve-btn")).await.unwrap();
    assert!(!reserve.is_enabled().await.unwrap());
    click(&client, "#lobby-join-btn").await;
    let waiting = "You are in the lobby. At the start a draw places everyone who joined before it; then buyers are let in, in that order.";
    text_becomes(&client, "#lobby-text", waiting).await;
    text_becomes(&client, "#lobby-length", "3").await;
    // The page joined for real: MongoDB has the entry, Redis the place.
    let entries = app
        .http
        .get(app.api(&format!("/sales/{sale}/lobby")))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(entries["joined"], 3);
    screenshot(&client, "buyer-lobby").await;

    // The draw at the start; one buyer a second is let in.
    start_in(&app, &sale, 1.0).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = client
            .find(Locator::Css("#lobby-card"))
            .await
            .unwrap()
            .attr("data-status")
            .await
            .unwrap();
        if status.as_deref() == Some("admitted") {
            break;
        }
        assert!(Instant::now() < deadline, "never let in: {status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reserve.is_enabled().await.unwrap());

    // The check in the page finds the same place the server's draw gives.
    let (seed, _, order) = draw(&app, &sale).await;
    let mine = hmac_hex(&seed, "lobby-page");
    let place = order.iter().position(|v| *v == mine).unwrap() + 1;
    open_details(&client, "#lobby-proof").await;
    // The button is enabled once the page has the revealed seed (it reads
    // the lobby again at the next second's figures), as a buyer sees it.
    let verify = client
        .find(Locator::Css("#lobby-verify-btn"))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !verify.is_enabled().await.unwrap() {
        assert!(Instant::now() < deadline, "the check never became possible");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    click(&client, "#lobby-verify-btn").await;
    text_becomes(
        &client,
        "#lobby-verdict",
        &format!(
            "The seed hashes to the published SHA-256. The index lists 1 page for 3 values, in order. Your page matches the index, and your value {}… is place {place} of 3.",
            &mine[..12]
        ),
    )
    .await;
    screenshot(&client, "buyer-admitted").await;

    click(&client, "#reserve-btn").await;
    shown(&client, "#hold-card").await;
    click(&client, "#confirm-btn").await;
    shown(&client, "#order-card").await;
    let orders = app.orders(&sale).await;
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0].user_id, "lobby-page");
    // The audit reads the admissions from MongoDB, which the recorder
    // copies there a moment after each one; the other buyer in the lobby
    // may be let in meanwhile. Wait for that, then check everything.
    let recorded = crate::helpers::eventually(Duration::from_secs(10), || async {
        crate::lobbies::recorded(&app, &sale).await;
        crate::helpers::audit(&app, &sale)
            .await
            .iter()
            .all(|c| c.ok)
            .then_some(())
    })
    .await;
    assert!(recorded.is_some(), "the lobby's log reached MongoDB");
    // Every check passed above; a second audit could find the other
    // buyer let in since, not yet copied.
    let (available, held, sold) = app.counts(&sale).await;
    assert_eq!((available, held, sold), (4, 0, 1));
    client.close().await.unwrap();
}

/// The operator adds a webhook endpoint on the page, sees its secret once
/// and its last deliveries; an endpoint that kept failing shows as
/// disabled, with why, and an Enable button.
#[tokio::test]
async fn the_operator_adds_a_webhook_endpoint_and_sees_its_deliveries() {
    let app = crate::helpers::spawn_app_with(|s| {
        s.webhooks.retry_first = Duration::from_millis(50);
        s.webhooks.retry_for = Duration::from_secs(1);
    })
    .await;
    let receiver = crate::receiver::Receiver::start().await;
    // One endpoint nobody answers: it is disabled after the retry period.
    let dead = app
        .http
        .post(app.api("/admin/webhooks"))
        .bearer_auth(admin_token())
        .json(&json!({"url": format!("http://127.0.0.1:{}/gone", free_port())}))
        .send()
        .await
        .unwrap();
    assert_eq!(dead.status(), 201);
    let client = browser(1400, 1100).await;
    open(&client, &app, "/operator", Some(&admin_token())).await;
    shown(&client, "#hook-form").await;
    new_sale_form_fits(&client).await;
    // This test's database has no sale: the list says so.
    text_becomes(&client, "#sales", "No sales yet: create one below.").await;
    fill(&client, "#hook-url", &receiver.url()).await;
    click(&client, "#hook-form button").await;
    shown(&client, "#hook-secret").await;
    let shown_secret = text_of(&client, "#hook-secret").await;
    let secret = shown_secret.rsplit(' ').next().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{shown_secret}");
    receiver.set_secret(&secret);

    let sale = app.create_sale(json!({"total": 5})).await;
    for i in 0..3 {
        let buyer = format!("hook-{i}");
        let rid = hold(&app, &sale, &buyer, 1).await;
        assert_eq!(app.confirm(&rid, &buyer).await.status(), 201);
    }
    // The page lists the receiver's three deliveries as delivered, and
    // the dead endpoint as disabled with its reason.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let delivered = client.find_all(Locator::Css(".hook .badge")).await.unwrap();
        let mut texts = Vec::new();
        for b in delivered {
            texts.push(b.text().await.unwrap_or_default());
        }
        let n = texts.iter().filter(|t| *t == "delivered").count();
        if n == 3 && texts.iter().any(|t| t == "disabled") {
            break;
        }
        assert!(Instant::now() < deadline, "the page shows {texts:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(crate::receiver::accepted(&receiver.received()).len() == 3);
    assert!(receiver.received().iter().all(|r| r.verified));
    shown(&client, ".hook button").await;
    // The two endpoints' deliveries line up in the same columns.
    let columns = client
        .execute(
            "return [...document.querySelectorAll('.hook table')].map((t) =>
               [...t.rows[0].cells].map((c) => Math.round(c.getBoundingClientRect().left)))",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(columns[0], columns[1], "the columns differ: {columns}");
    screenshot(&client, "operator-webhooks").await;
    client.close().await.unwrap();
}
