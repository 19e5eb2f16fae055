use crate::helpers::*;
use reqwest::StatusCode;
use scraper::Html;

#[tokio::test]
async fn import_lists_searches_and_updates_assets() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let csv = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/example-assets.csv"))
        .unwrap();
    let r = admin.import_csv(&csv).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let html = admin.page(r.headers()["location"].to_str().unwrap()).await;
    assert_eq!(texts(&html, "[role=status]"), ["Imported 6 assets."]);
    assert_eq!(
        ids(&html),
        [
            "Backpack_B",
            "Backpack_R",
            "Hiking_Boot_01",
            "Size_Guide",
            "Trail_Video",
            "Tent_2P"
        ]
    );

    // Search by ID or name, case-insensitively.
    let html = admin.page("/assets?q=BACKPACK").await;
    assert_eq!(ids(&html), ["Backpack_B", "Backpack_R"]);
    let html = admin.page("/assets?q=tent").await;
    assert_eq!(ids(&html), ["Tent_2P"]);
    let html = admin.page("/assets?q=100%25").await;
    assert!(ids(&html).is_empty(), "% is a literal, not a wildcard");

    // Re-importing an ID updates it; sorting by modified puts it first.
    std::thread::sleep(std::time::Duration::from_millis(5));
    assert_eq!(
        admin
            .import_csv("id,name,type\nTent_2P,Tent for two,image\n")
            .await
            .status(),
        StatusCode::SEE_OTHER
    );
    let html = admin.page("/assets?sort=modified").await;
    assert_eq!(ids(&html)[0], "Tent_2P");
    assert!(texts(&html, "tbody td").contains(&"Tent for two".to_string()));
    assert_eq!(ids(&html).len(), 6);
}

#[tokio::test]
async fn fifty_per_page_with_total_and_next_and_previous_links() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let csv: String = std::iter::once("id,name,type\n".to_string())
        .chain((0..120).map(|i| format!("A{i:03},Asset {i:03},image\n")))
        .collect();
    assert_eq!(admin.import_csv(&csv).await.status(), StatusCode::SEE_OTHER);
    let want = |range: std::ops::Range<i32>| range.map(|i| format!("A{i:03}")).collect::<Vec<_>>();
    let html = admin.page("/assets").await;
    assert_eq!(ids(&html), want(0..50));
    assert_eq!(texts(&html, "#asset-count"), ["120 assets."]);
    assert_eq!(texts(&html, ".pager a"), ["Next"]);

    let html = admin.page(&link(&html, "next")).await;
    assert_eq!(ids(&html), want(50..100));
    assert_eq!(texts(&html, ".pager a"), ["First", "Previous", "Next"]);
    let last = admin.page(&link(&html, "next")).await;
    assert_eq!(ids(&last), want(100..120));
    assert_eq!(texts(&last, ".pager a"), ["First", "Previous"]);
    assert_eq!(texts(&last, "#asset-count"), ["120 assets."]);

    let html = admin.page(&link(&last, "prev")).await;
    assert_eq!(ids(&html), want(50..100));
    let html = admin.page(&link(&html, "prev")).await;
    assert_eq!(ids(&html), want(0..50));
    assert_eq!(texts(&html, ".pager a"), ["Next"], "back at the first page");
    assert_eq!(ids(&admin.page(&link(&last, "first")).await), want(0..50));

    // A link that is not one of ours starts over.
    assert_eq!(
        ids(&admin.page("/assets?after=nonsense").await),
        want(0..50)
    );
    // The select-all box and the Invalidate CDN button are there.
    assert!(html.select(&sel("#select-all")).next().is_some());
    assert_eq!(
        attr(&html, "form#selection", "action").unwrap(),
        "/invalidate"
    );
}

/// The href of the pager's link with this `rel`.
fn link(html: &Html, rel: &str) -> String {
    attr(html, &format!(".pager a[rel={rel}]"), "href").unwrap_or_else(|| panic!("no {rel} link"))
}

/// Every page from the first, following `rel=next`; then every page back from the last one,
/// following `rel=prev`. Returns the IDs of both walks in list order.
async fn walk_pages(admin: &Browser, first: &str) -> (Vec<String>, Vec<String>) {
    let mut forward = Vec::new();
    let mut html = admin.page(first).await;
    loop {
        forward.extend(ids(&html));
        match attr(&html, ".pager a[rel=next]", "href") {
            Some(next) => html = admin.page(&next).await,
            None => break,
        }
    }
    let mut pages = vec![ids(&html)];
    while let Some(previous) = attr(&html, ".pager a[rel=prev]", "href") {
        html = admin.page(&previous).await;
        pages.push(ids(&html));
    }
    let backward = pages.into_iter().rev().flatten().collect();
    (forward, backward)
}

/// One asset of the catalogue below, and what the list should show.
struct Row {
    id: String,
    name: String,
}

impl Row {
    /// The app's match: ID or name contains `q`, ASCII letters in any case.
    fn matches(&self, q: &str) -> bool {
        let q = q.to_ascii_lowercase();
        self.id.to_ascii_lowercase().contains(&q) || self.name.to_ascii_lowercase().contains(&q)
    }
}

fn csv_field(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn csv_of(rows: &[Row]) -> String {
    std::iter::once("id,name,type\n".to_string())
        .chain(
            rows.iter()
                .map(|r| format!("{},{},image\n", csv_field(&r.id), csv_field(&r.name))),
        )
        .collect()
}

#[tokio::test]
async fn paging_visits_every_match_once_in_order_both_ways() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    // 330 assets in three imports (so three modification times), names out of ID order.
    let rows: Vec<Row> = (0..330)
        .map(|i| Row {
            id: format!("item-{i:03}"),
            name: format!(
                "Thing {:03}{}",
                (i * 7) % 330,
                if i % 3 == 0 { " red" } else { "" }
            ),
        })
        .collect();
    for batch in rows.chunks(110) {
        assert_eq!(
            admin.import_csv(&csv_of(batch)).await.status(),
            StatusCode::SEE_OTHER
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let by_name = |q: &str| {
        let mut found: Vec<&Row> = rows.iter().filter(|r| r.matches(q)).collect();
        found.sort_by(|a, b| (a.name.to_lowercase(), &a.id).cmp(&(b.name.to_lowercase(), &b.id)));
        found.into_iter().map(|r| r.id.clone()).collect::<Vec<_>>()
    };
    // Modified: the last import first; within one import (one time), by ID descending.
    let by_modified = |q: &str| {
        let mut found: Vec<(usize, &Row)> = rows
            .iter()
            .enumerate()
            .filter(|(_, r)| r.matches(q))
            .collect();
        found.sort_by(|(i, a), (j, b)| (j / 110).cmp(&(i / 110)).then(b.id.cmp(&a.id)));
        found
            .into_iter()
            .map(|(_, r)| r.id.clone())
            .collect::<Vec<_>>()
    };
    // No search, a trigram search, a one-character and a two-character search.
    for q in ["", "RED", "Thing 1", "1", "05"] {
        for (sort, want) in [("name", by_name(q)), ("modified", by_modified(q))] {
            let path = format!("/assets?q={}&sort={sort}", urlencode(q));
            let (forward, backward) = walk_pages(&admin, &path).await;
            assert_eq!(forward, want, "forward, q={q:?} sort={sort}");
            assert_eq!(backward, want, "backward, q={q:?} sort={sort}");
            let html = admin.page(&path).await;
            assert_eq!(
                texts(&html, "#asset-count")[0],
                if q.is_empty() {
                    format!("{} assets.", want.len())
                } else {
                    format!("{} assets match “{q}”.", want.len())
                }
            );
        }
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn searches_treat_wildcards_quotes_and_unicode_as_text() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let rows: Vec<Row> = [
        ("pct_100%", "Sale 100% off"),
        ("under_score", "Plain name"),
        ("o'brien", "O'Brien's jacket"),
        ("say\"hi\"", "The \"best\" tent"),
        ("back\\slash", "Path C:\\Temp\\x"),
        ("uni-1", "Ünïcødé Jacket"),
        ("jp-1", "日本の傘"),
        ("x", "Y"),
        ("ab", "Cd"),
        ("plain-1", "Nothing special"),
    ]
    .into_iter()
    .map(|(id, name)| Row {
        id: id.into(),
        name: name.into(),
    })
    .collect();
    assert_eq!(
        admin.import_csv(&csv_of(&rows)).await.status(),
        StatusCode::SEE_OTHER
    );
    let search = |q: &'static str| {
        let admin = &admin;
        async move {
            let mut found = ids(&admin.page(&format!("/assets?q={}", urlencode(q))).await);
            found.sort();
            found
        }
    };
    let cases: &[(&str, &[&str])] = &[
        ("%", &["pct_100%"]),
        ("100%", &["pct_100%"]),
        ("_", &["pct_100%", "under_score"]),
        ("R_S", &["under_score"]),
        ("e_s", &[]),
        ("'", &["o'brien"]),
        ("o'b", &["o'brien"]),
        ("\"", &["say\"hi\""]),
        ("\"BEST\"", &["say\"hi\""]),
        ("\\", &["back\\slash"]),
        ("K\\S", &["back\\slash"]),
        ("Ünïcødé", &["uni-1"]),
        ("ïcø", &["uni-1"]),
        ("Ü", &["uni-1"]),
        ("JACKET", &["o'brien", "uni-1"]),
        ("日本", &["jp-1"]),
        ("本の傘", &["jp-1"]),
        ("の", &["jp-1"]),
        ("X", &["back\\slash", "x"]),
        ("y", &["say\"hi\"", "x"]),
        ("AB", &["ab"]),
        ("cd", &["ab"]),
        ("sale 100% off", &["pct_100%"]),
        ("no such thing", &[]),
    ];
    for (q, want) in cases {
        let mut expected: Vec<String> = rows
            .iter()
            .filter(|r| r.matches(q))
            .map(|r| r.id.clone())
            .collect();
        expected.sort();
        assert_eq!(expected, *want, "the test's own reference, q={q:?}");
        assert_eq!(search(q).await, *want, "q={q:?}");
    }
}

#[tokio::test]
async fn short_searches_with_few_matches_find_every_match_and_follow_renames() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    // More rows than SQLite samples to judge a short search frequent (2,000), none holding
    // the rare searches below: they are looked up among the index's terms, not walked.
    let mut rows: Vec<Row> = (0..2_500)
        .map(|i| Row {
            id: format!("bulk-{i:05}"),
            name: format!("Bulk asset {i:05}"),
        })
        .collect();
    for (id, name) in [
        ("zq-first", "starts the ID"),
        ("mid-ZQ-mid", "in the middle, upper case"),
        ("ends-zq", "ends the ID"),
        ("name-1", "Lamp zQ"),
        ("zq", "the whole ID"),
        ("hash-1", "tag#"),
        ("~tilde", "first character"),
        ("q", "one character"),
        ("pct-1", "50%zq_off"),
        ("uml-1", "Äzq"),
    ] {
        rows.push(Row {
            id: id.into(),
            name: name.into(),
        });
    }
    assert_eq!(
        admin.import_csv(&csv_of(&rows)).await.status(),
        StatusCode::SEE_OTHER
    );
    let search = |q: String| {
        let admin = &admin;
        async move {
            let html = admin.page(&format!("/assets?q={}", urlencode(&q))).await;
            let mut found = ids(&html);
            found.sort();
            (found, texts(&html, "#asset-count")[0].clone())
        }
    };
    // "ж" is in no row, "zж" neither.
    for q in [
        "zq", "ZQ", "Zq", "#", "~", "q-", "zz", "g#", "~t", "h-", "ж", "zж", "%z",
    ] {
        let mut want: Vec<String> = rows
            .iter()
            .filter(|r| r.matches(q))
            .map(|r| r.id.clone())
            .collect();
        want.sort();
        let (found, count) = search(q.to_string()).await;
        assert_eq!(found, want, "q={q:?}");
        assert_eq!(
            count,
            format!("{} assets match “{q}”.", want.len()),
            "q={q:?}"
        );
    }
    assert_eq!(search("zq".into()).await.0.len(), 7);
    // A rename takes the asset out of the index's old terms and into the new ones.
    let renamed = "id,name,type\nname-1,Lamp without it,image\nbulk-00007,Bulk zq 7,image\n";
    assert_eq!(
        admin.import_csv(renamed).await.status(),
        StatusCode::SEE_OTHER
    );
    let (found, _) = search("zq".into()).await;
    assert_eq!(
        found,
        [
            "bulk-00007",
            "ends-zq",
            "mid-ZQ-mid",
            "pct-1",
            "uml-1",
            "zq",
            "zq-first"
        ],
        "after the rename"
    );
}

/// PostgreSQL plans searches by the catalogue's statistics (its sample of IDs and names, and
/// the planner's estimates): an import that wrote a tenth of the catalogue or more leaves them
/// fresh itself. Autovacuum would not analyze two rows (its threshold is 50), and may be off.
#[tokio::test]
async fn an_import_leaves_fresh_statistics_of_the_catalogue() {
    if !on_postgres() {
        return;
    }
    let app = spawn_app().await;
    let admin = app.admin().await;
    let stats = "SELECT count(*) FROM pg_stats
                 WHERE schemaname = current_schema() AND tablename = 'assets'
                   AND attname IN ('id', 'name')";
    let before: Vec<(i64,)> = raw_rows(&app.database_url, stats).await;
    assert_eq!(before[0].0, 0, "no statistics before the first import");
    let csv = "id,name,type\nA1,Red tent,image\nB2,Blue lamp,image\n";
    assert_eq!(admin.import_csv(csv).await.status(), StatusCode::SEE_OTHER);
    let after: Vec<(i64,)> = raw_rows(&app.database_url, stats).await;
    assert_eq!(after[0].0, 2, "statistics of the IDs and names");
}

/// PostgreSQL with ICU's collation: its lower() folds a word-final Σ to ς, so a LIKE pattern
/// folded apart from the row ("%zqΣ%" becomes "%zqς%") would miss the row's "zqσa". Rare short
/// searches there walk the list instead of being looked up by the catalogue's characters.
#[tokio::test]
async fn a_short_search_finds_its_rows_under_icus_collation() {
    if !on_postgres() {
        return;
    }
    let db =
        PgDatabase::create_with("LOCALE_PROVIDER icu ICU_LOCALE 'und' TEMPLATE template0").await;
    let app = start(test_config(&db.url), tempfile::tempdir().unwrap()).await;
    let admin = app.admin().await;
    let csv = "id,name,type\na1,zqΣa,image\nb1,other,image\n";
    assert_eq!(admin.import_csv(csv).await.status(), StatusCode::SEE_OTHER);
    assert_eq!(ids(&admin.page("/assets?q=zq").await), ["a1"]);
    assert_eq!(ids(&admin.page("/assets?q=ZQ").await), ["a1"]);
}

#[tokio::test]
async fn a_search_whose_every_trigram_is_frequent_is_counted_and_paged_in_the_lists_order() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    // Every row holds the trigrams of "aaabbb" (aaa, aab, abb, bbb), more than SQLite checks
    // one by one (5,000); 1,200 rows hold "aaabbb" itself, named in the reverse of the order
    // they were imported in, and one row holds "aaabbbb".
    let csv: String = std::iter::once("id,name,type\n".to_string())
        .chain((0..6_000).map(|i| {
            let id = if i < 1_200 {
                format!("aaabbb-{i:05}")
            } else {
                format!("aaab-{i:05}")
            };
            format!("{id},abbb {:05},image\n", 5_999 - i)
        }))
        .chain(std::iter::once("only-aaabbbb,Z,image\n".to_string()))
        .collect();
    assert_eq!(admin.import_csv(&csv).await.status(), StatusCode::SEE_OTHER);
    let html = admin.page("/assets?q=AAABBBB").await;
    assert_eq!(ids(&html), ["only-aaabbbb"]);
    assert_eq!(texts(&html, "#asset-count"), ["1 assets match “AAABBBB”."]);
    // More than a thousand: the first page in name order ("abbb 04800" first), not the first
    // rows found.
    let want = |range: std::ops::Range<i32>| {
        range
            .rev()
            .map(|i| format!("aaabbb-{i:05}"))
            .collect::<Vec<_>>()
    };
    let html = admin.page("/assets?q=aaabbb").await;
    assert_eq!(
        texts(&html, "#asset-count"),
        ["More than 1,000 assets match “aaabbb”."]
    );
    assert_eq!(ids(&html), want(1_150..1_200));
    let html = admin.page(&link(&html, "next")).await;
    assert_eq!(ids(&html), want(1_100..1_150));
}

#[tokio::test]
async fn counts_stop_past_a_thousand_matches() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    // More rows than the SQLite search checks one by one (5,000), so that "bulk" is frequent.
    let csv: String = std::iter::once("id,name,type\n".to_string())
        .chain((0..6_000).map(|i| format!("bulk-{i:05},Bulk asset {i:05},image\n")))
        .collect();
    assert_eq!(admin.import_csv(&csv).await.status(), StatusCode::SEE_OTHER);
    let want =
        |range: std::ops::Range<i32>| range.map(|i| format!("bulk-{i:05}")).collect::<Vec<_>>();
    let html = admin.page("/assets").await;
    assert_eq!(texts(&html, "#asset-count"), ["More than 1,000 assets."]);
    // Every trigram of "bulk" is in every row: the list walks its order.
    let html = admin.page("/assets?q=BULK&sort=name").await;
    assert_eq!(
        texts(&html, "#asset-count"),
        ["More than 1,000 assets match “BULK”."]
    );
    assert_eq!(ids(&html), want(0..50));
    let html = admin.page(&link(&html, "next")).await;
    assert_eq!(ids(&html), want(50..100));
    // Rarer trigrams: the rows holding them are checked, counted and sorted.
    let html = admin.page("/assets?q=asset+0100").await;
    assert_eq!(
        texts(&html, "#asset-count"),
        ["10 assets match “asset 0100”."]
    );
    assert_eq!(ids(&html), want(1_000..1_010));
    let html = admin.page("/assets?q=05999").await;
    assert_eq!(ids(&html), ["bulk-05999"]);
    // Exactly the limit is still a count.
    let html = admin.page("/assets?q=k-01").await;
    assert_eq!(texts(&html, "#asset-count"), ["1,000 assets match “k-01”."]);
    // PostgreSQL with statistics looks up the rare part of a search ("05999") in its indexes
    // and checks the rows against all of it.
    if let Some(db) = &app.postgres {
        let mut c: sqlx::PgConnection = sqlx::Connection::connect(&db.url).await.unwrap();
        sqlx::Executor::execute(&mut c, "ANALYZE assets")
            .await
            .unwrap();
        for q in ["Bulk+asset+05999", "BULK+ASSET+05999", "k+asset+0599"] {
            let html = admin.page(&format!("/assets?q={q}")).await;
            let want = if q.ends_with("0599") {
                want(5_990..6_000)
            } else {
                want(5_999..6_000)
            };
            assert_eq!(ids(&html), want, "q={q}");
        }
    }
}

#[tokio::test]
async fn frequent_words_in_a_rare_order_are_found() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    // Every trigram of "bulk asset bulk" is in more than 5,000 rows, the phrase in three.
    let csv: String = std::iter::once("id,name,type\n".to_string())
        .chain((0..10_400).map(|i| {
            let name = if i % 2 == 0 {
                "Bulk asset"
            } else {
                "Asset bulk"
            };
            format!("x-{i:05},{name} {i:05},image\n")
        }))
        .chain((0..3).map(|i| format!("rare-{i},Bulk asset bulk {i},image\n")))
        .collect();
    assert_eq!(admin.import_csv(&csv).await.status(), StatusCode::SEE_OTHER);
    let html = admin.page("/assets?q=BULK+ASSET+BULK").await;
    assert_eq!(ids(&html), ["rare-0", "rare-1", "rare-2"]);
    assert_eq!(
        texts(&html, "#asset-count"),
        ["3 assets match “BULK ASSET BULK”."]
    );
    let html = admin.page("/assets?q=asset+bulk&sort=modified").await;
    assert_eq!(
        texts(&html, "#asset-count"),
        ["More than 1,000 assets match “asset bulk”."]
    );
    assert_eq!(ids(&html).len(), 50);
}

#[tokio::test]
async fn a_bad_row_rejects_the_whole_file() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    assert_eq!(
        admin.import_csv("id,name\nkeep,Kept\n").await.status(),
        StatusCode::SEE_OTHER
    );
    let long_id = "x".repeat(513);
    let csv = format!(
        "id,name,type\nnew_1,New,image\nkeep,Renamed,image\n{long_id},Too long,image\nnew_2,Bad,gif\n"
    );
    let r = admin.import_csv(&csv).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = Html::parse_document(&r.text().await.unwrap());
    let errors = texts(&html, "#import-errors li");
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].starts_with("Line 4:") && errors[0].contains("512"));
    assert!(errors[1].starts_with("Line 5:") && errors[1].contains("gif"));
    // Nothing half imported: no new rows, the existing one not renamed.
    let html = admin.page("/assets").await;
    assert_eq!(ids(&html), ["keep"]);
    assert!(texts(&html, "tbody td").contains(&"Kept".to_string()));
    // A wrong header is named.
    let r = admin.import_csv("sku,title\n1,2\n").await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().await.unwrap().contains("the header must be"));
}

#[tokio::test]
async fn users_see_assets_but_cannot_import() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    admin.import_csv("id,name\na,A\n").await;
    let user = app.user(&admin, "ursula").await;
    let html = user.page("/assets").await;
    assert_eq!(ids(&html), ["a"]);
    assert!(
        html.select(&sel("form[action='/assets/import']"))
            .next()
            .is_none()
    );
    assert_eq!(
        user.import_csv("id,name\nb,B\n").await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(ids(&user.page("/assets").await), ["a"]);
}

#[tokio::test]
async fn a_malformed_quoted_field_writes_nothing_and_names_its_line() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    assert_eq!(
        admin.import_csv("id,name\nkeep,Kept\n").await.status(),
        StatusCode::SEE_OTHER
    );
    // Once read leniently as the name `abcd"`.
    let csv = "id,name,type\r\nnew_1,\"New, \"\"quoted\"\"\",image\r\nkeep,Renamed,image\r\nQ3,\"ab\"cd\",image\r\n";
    let r = admin.import_csv(csv).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = Html::parse_document(&r.text().await.unwrap());
    let errors = texts(&html, "#import-errors li");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("Line 4: field 2 has text after its closing quote"),
        "{errors:?}"
    );
    let html = admin.page("/assets").await;
    assert_eq!(ids(&html), ["keep"]);
    assert!(texts(&html, "tbody td").contains(&"Kept".to_string()));
}

/// Every asset's ID and `modified_at`, read from the database directly.
async fn modified_times(url: &str) -> Vec<(String, i64)> {
    raw_rows(url, "SELECT id, modified_at FROM assets ORDER BY id").await
}

/// Imports `csv` and returns the counts the page shows after the redirect.
async fn import_counts(admin: &Browser, csv: &str) -> (String, String) {
    let r = admin.import_csv(csv).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let html = admin.page(r.headers()["location"].to_str().unwrap()).await;
    (
        texts(&html, "[role=status]").concat(),
        texts(&html, "#import-counts").concat(),
    )
}

#[tokio::test]
async fn reimporting_a_file_changes_nothing_and_says_so() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let csv = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/example-assets.csv"))
        .unwrap();
    assert_eq!(
        import_counts(&admin, &csv).await,
        (
            "Imported 6 assets.".into(),
            "6 new, 0 changed, 0 unchanged.".into()
        )
    );
    let first = modified_times(&app.database_url).await;
    assert_eq!(first.len(), 6);

    std::thread::sleep(std::time::Duration::from_millis(5));
    assert_eq!(
        import_counts(&admin, &csv).await.1,
        "0 new, 0 changed, 6 unchanged."
    );
    assert_eq!(modified_times(&app.database_url).await, first);

    // A renamed asset and one of another type get the import's time; the others keep theirs.
    std::thread::sleep(std::time::Duration::from_millis(5));
    let csv = "id,name,type\nTent_2P,Tent for two,image\nSize_Guide,Size guide PDF,image\nBackpack_B,Backpack blue,image\nNew_1,\"Say \"\"hi\"\", C:\\tmp é ✓\",other\n";
    assert_eq!(
        import_counts(&admin, csv).await.1,
        "1 new, 2 changed, 1 unchanged."
    );
    // Quotes, commas, backslashes and non-ASCII text are stored as they were read, so the same
    // file again finds every row unchanged.
    assert!(
        texts(&admin.page("/assets?q=hi").await, "tbody td")
            .contains(&"Say \"hi\", C:\\tmp é ✓".into())
    );
    assert_eq!(
        import_counts(&admin, csv).await.1,
        "0 new, 0 changed, 4 unchanged."
    );
    let now = modified_times(&app.database_url).await;
    let time_of = |rows: &[(String, i64)], id: &str| {
        rows.iter().find(|(i, _)| i == id).map(|(_, t)| *t).unwrap()
    };
    assert_eq!(time_of(&now, "Backpack_B"), time_of(&first, "Backpack_B"));
    assert_eq!(
        time_of(&now, "Hiking_Boot_01"),
        time_of(&first, "Hiking_Boot_01")
    );
    assert!(time_of(&now, "Tent_2P") > time_of(&first, "Tent_2P"));
    assert!(time_of(&now, "Size_Guide") > time_of(&first, "Size_Guide"));
    assert_eq!(time_of(&now, "New_1"), time_of(&now, "Tent_2P"));
}

/// Pages of the list are kept in memory per catalogue version: an import by another process
/// (the CLI, or another instance) shows within a fraction of a second, without a restart.
#[tokio::test]
async fn an_import_by_another_process_shows_in_the_list_soon_after() {
    use std::process::Command;
    let app = spawn_app().await;
    let admin = app.admin().await;
    let r = admin
        .import_csv("id,name,type\nTent_2P,Tent,image\nLamp_X,Lamp,image\n")
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    // Read (and so kept in memory) before the other import.
    assert_eq!(ids(&admin.page("/assets?q=tent").await), ["Tent_2P"]);
    assert_eq!(
        texts(&admin.page("/assets").await, "#asset-count"),
        ["2 assets."]
    );

    let csv = app.dir.path().join("more.csv");
    std::fs::write(&csv, "id,name,type\nTent_3P,Tent for three,image\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cdn-invalidator"))
        .args(["assets", "import"])
        .arg(&csv)
        .args(["--database", &app.database_url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let started = std::time::Instant::now();
    loop {
        let found = ids(&admin.page("/assets?q=tent").await);
        if found == ["Tent_2P", "Tent_3P"] {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(3),
            "the list still shows {found:?} after the import"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        texts(&admin.page("/assets").await, "#asset-count"),
        ["3 assets."]
    );
}

/// A first import of 50,000 assets (on PostgreSQL: the list's indexes dropped and built again
/// after the rows, in the import's transaction; on SQLite: the search index built from the
/// table) leaves every index of the list in place, and the list and its search work on it.
#[tokio::test]
async fn a_first_large_import_keeps_the_lists_indexes_and_search() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let mut csv = String::from("id,name,type\n");
    for i in 0..50_000 {
        csv.push_str(&format!("Bulk_{i:05},Bulk asset {i},image\n"));
    }
    assert_eq!(
        import_counts(&admin, &csv).await,
        (
            "Imported 50000 assets.".into(),
            "50000 new, 0 changed, 0 unchanged.".into()
        )
    );
    if app.database_url.starts_with("postgres") {
        let mut names: Vec<(String,)> = raw_rows(
            &app.database_url,
            "SELECT indexname::text FROM pg_indexes WHERE tablename = 'assets' ORDER BY 1",
        )
        .await;
        names.sort();
        let names: Vec<String> = names.into_iter().map(|(n,)| n).collect();
        for index in [
            "assets_modified",
            "assets_name_lower",
            "assets_search_id",
            "assets_search_name",
        ] {
            assert!(names.iter().any(|n| n == index), "{index} in {names:?}");
        }
    }
    // The ID search (trigram index) and the name search with its count.
    assert_eq!(
        ids(&admin.page("/assets?q=bulk_04999").await),
        ["Bulk_04999"]
    );
    let html = admin.page("/assets?q=asset%204999").await;
    let mut found = ids(&html);
    found.sort();
    let mut expected: Vec<String> = std::iter::once(4999)
        .chain(49_990..50_000)
        .map(|i| format!("Bulk_{i:05}"))
        .collect();
    expected.sort();
    assert_eq!(found, expected);
    // The index takes the rows added afterwards (SQLite: the insert trigger and the list's
    // indexes, dropped while the rows went in, are back), short searches included.
    assert_eq!(
        import_counts(&admin, "id,name,type\nZq_later,Added later,image\n").await,
        (
            "Imported 1 assets.".into(),
            "1 new, 0 changed, 0 unchanged.".into()
        )
    );
    assert_eq!(ids(&admin.page("/assets?q=zq").await), ["Zq_later"]);
    assert_eq!(ids(&admin.page("/assets?q=added%20l").await), ["Zq_later"]);
    if app.database_url.starts_with("sqlite") {
        let made: Vec<(String,)> = raw_rows(
            &app.database_url,
            "SELECT name FROM sqlite_master WHERE tbl_name = 'assets' AND sql IS NOT NULL
               AND type IN ('index', 'trigger') ORDER BY name",
        )
        .await;
        let made: Vec<String> = made.into_iter().map(|(n,)| n).collect();
        assert_eq!(
            made,
            [
                "assets_modified",
                "assets_name_lower",
                "assets_search_delete",
                "assets_search_insert",
                "assets_search_update"
            ]
        );
    }
}

/// A first import (PostgreSQL: streamed by `COPY`) stores each field exactly as the file
/// gave it: quotes, commas, backslashes, `\N` and an empty name are text, never NULL or an
/// escape.
#[tokio::test]
async fn a_first_import_stores_every_field_as_written() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let csv = "id,name,type\n\
               Q1,\"Say \"\"hi\"\", then go\",image\n\
               Q2,back\\slash \\N,video\n\
               Q3,\\N,other\n\
               Q4,,image\n\
               Q5,日本 Ünïcødé;semi,image\n";
    assert_eq!(
        import_counts(&admin, csv).await,
        (
            "Imported 5 assets.".into(),
            "5 new, 0 changed, 0 unchanged.".into()
        )
    );
    let rows: Vec<(String, Option<String>, String)> = raw_rows(
        &app.database_url,
        "SELECT id, name, kind FROM assets ORDER BY id",
    )
    .await;
    let want = [
        ("Q1", "Say \"hi\", then go", "image"),
        ("Q2", "back\\slash \\N", "video"),
        ("Q3", "\\N", "other"),
        ("Q4", "", "image"),
        ("Q5", "日本 Ünïcødé;semi", "image"),
    ];
    let want: Vec<(String, Option<String>, String)> = want
        .iter()
        .map(|(id, name, kind)| (id.to_string(), Some(name.to_string()), kind.to_string()))
        .collect();
    assert_eq!(rows, want);
}

/// After an import the page says what changed and offers Invalidate CDN for exactly the assets
/// whose content changed under the same ID (not the new ones, not the unchanged ones).
#[tokio::test]
async fn an_import_offers_invalidate_cdn_for_exactly_the_changed_assets() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    admin
        .save_settings("server.com", "Company/<ID>", "", "")
        .await;
    let first = "id,name,type\nTent_2P,Tent,image\nLamp_X,Lamp,image\nMug_1,Mug,image\n";
    let r = admin.import_csv(first).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let html = admin.page(r.headers()["location"].to_str().unwrap()).await;
    assert!(
        texts(&html, "#invalidate-changed").is_empty(),
        "nothing changed in a first import"
    );

    let second = "id,name,type\nTent_2P,Tent for two,image\nLamp_X,Lamp,image\nMug_1,Mug,video\nNew_9,New,image\n";
    let r = admin.import_csv(second).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let html = admin.page(&location).await;
    assert_eq!(
        texts(&html, "#import-counts"),
        ["1 new, 2 changed, 1 unchanged."]
    );
    let mut offered: Vec<String> = html
        .select(&scraper::Selector::parse("#invalidate-changed input[name=asset_id]").unwrap())
        .map(|e| e.value().attr("value").unwrap().to_string())
        .collect();
    offered.sort();
    assert_eq!(offered, ["Mug_1", "Tent_2P"]);
    assert_eq!(
        texts(&html, "#invalidate-changed button"),
        ["Invalidate CDN for the 2 changed assets"]
    );
    // The button opens Invalidate CDN prefilled with their URLs.
    let ids: Vec<&str> = offered.iter().map(String::as_str).collect();
    let (status, page) = admin.open_invalidate(&ids).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        texts(&page, "#urls").concat().trim(),
        "https://server.com/is/image/Company/Mug_1\nhttps://server.com/is/image/Company/Tent_2P"
    );
    // Another import replaces the offer; an old address offers nothing.
    admin.import_csv(second).await;
    let html = admin.page(&location).await;
    assert!(texts(&html, "#invalidate-changed").is_empty());
}
