//! Key lookups over a real PostgreSQL: a batch answers each presented key in order, records a
//! use only for a live key presented with its own digest, and `KeyFinder` gives concurrent
//! callers the same answers as one lookup each.

#![allow(missing_docs)]

use aiprod_domain::Scope;
use aiprod_store::keys::{NewKey, digest};
use aiprod_store::{KeyFinder, TenantLimits, create_tenant, find_api_keys, insert_api_key};
use aiprod_testkit::TestDb;
use secrecy::ExposeSecret;
use sqlx::PgPool;

async fn used(pool: &PgPool, prefix: &str) -> anyhow::Result<bool> {
    Ok(
        sqlx::query_scalar("select last_used_at is not null from api_key where prefix = $1")
            .bind(prefix)
            .fetch_one(pool)
            .await?,
    )
}

#[tokio::test]
async fn a_batch_answers_each_key_in_order_and_records_only_true_uses() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let tenant = create_tenant(&pool, "acme", &TenantLimits::default())
        .await?
        .ok_or_else(|| anyhow::anyhow!("no tenant"))?;
    let (live, forged, revoked) = (NewKey::generate(), NewKey::generate(), NewKey::generate());
    for k in [&live, &forged, &revoked] {
        insert_api_key(
            &pool,
            tenant.id,
            &k.prefix,
            &k.hash,
            "k",
            &[Scope::JobsRead],
        )
        .await?;
    }
    aiprod_store::revoke_api_key(&pool, &revoked.prefix, None).await?;
    let wrong = digest("aiprod_000000000000_not-the-key");
    let asks: Vec<(&str, Option<&[u8]>)> = vec![
        (&live.prefix, Some(&live.hash)),
        ("ffffffffffff", Some(&wrong)),
        (&forged.prefix, Some(&wrong)),
        (&revoked.prefix, Some(&revoked.hash)),
        (&live.prefix, Some(&live.hash)),
    ];
    let found = find_api_keys(&pool, &asks).await?;
    assert_eq!(found.len(), 5);
    let prefix = |i: usize| found[i].as_ref().map(|f| f.key.prefix.clone());
    assert_eq!(prefix(0).as_deref(), Some(live.prefix.as_str()));
    assert_eq!(prefix(1), None, "an unknown prefix finds nothing");
    assert_eq!(prefix(2).as_deref(), Some(forged.prefix.as_str()));
    assert_eq!(prefix(3).as_deref(), Some(revoked.prefix.as_str()));
    assert_eq!(prefix(4).as_deref(), Some(live.prefix.as_str()));
    assert_eq!(found[0].as_ref().map(|f| f.tenant.id), Some(tenant.id));
    assert!(
        found[3]
            .as_ref()
            .is_some_and(|f| f.key.revoked_at.is_some())
    );
    assert!(
        used(&pool, &live.prefix).await?,
        "the live key's use is recorded"
    );
    assert!(
        !used(&pool, &forged.prefix).await?,
        "a wrong digest is no use"
    );
    assert!(
        !used(&pool, &revoked.prefix).await?,
        "a revoked key is not used"
    );

    // Many callers at once through the finder get what one lookup each would give.
    let finder = KeyFinder::new(pool.clone());
    let calls = (0..64).map(|i| {
        let (finder, live, forged) = (finder.clone(), &live, &forged);
        async move {
            let k = if i % 2 == 0 { live } else { forged };
            let given = digest(k.secret.expose_secret());
            finder.find(&k.prefix, given).await
        }
    });
    for (i, r) in futures::future::join_all(calls)
        .await
        .into_iter()
        .enumerate()
    {
        let f = r
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .ok_or_else(|| anyhow::anyhow!("none"))?;
        let want = if i % 2 == 0 { &live } else { &forged };
        assert_eq!(f.key.prefix, want.prefix);
        assert_eq!(f.hash, want.hash);
    }
    assert!(
        used(&pool, &forged.prefix).await?,
        "presented with its own key, it is used"
    );
    Ok(())
}
