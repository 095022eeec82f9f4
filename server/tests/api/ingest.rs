//! Ingest on both backends: the store's two arms (PostgreSQL `unnest`, the
//! portable multi-row INSERT on SQLite) are exercised by the same tests.

use server::{
    domain::PointId,
    store::readings::{self, NewReading},
};

use crate::helpers::{batch, reading, spawn_app};

#[tokio::test]
async fn a_full_size_batch_sent_twice_is_stored_once_and_acknowledged_twice() {
    let app = spawn_app().await;
    let seed = app.seed().await;
    let mut agent = app.agent_with_hello(&seed.agent).await;
    let points = ["outdoor_temp", "supply_temp", "compressor", "alarm"];
    let rows: Vec<_> = (0..protocol::MAX_READINGS_PER_BATCH)
        .map(|i| reading(points[i % 4], (i / 4) as i64, i as f64 * 0.5))
        .collect();
    let msg = batch(7, rows);
    for _ in 0..2 {
        match agent.request(&msg).await {
            protocol::ServerToAgent::Ack(a) => assert_eq!(a.seq, 7),
            other => panic!("expected an ack, got {other:?}"),
        }
    }
    assert_eq!(
        app.readings_count().await,
        protocol::MAX_READINGS_PER_BATCH as u64
    );
}

#[tokio::test]
async fn the_store_counts_only_new_rows_and_keeps_the_first_value_of_a_key() {
    let app = spawn_app().await;
    let seed = app.seed().await;
    // The hello registers the catalogue, which gives the points their ids.
    let _agent = app.agent_with_hello(&seed.agent).await;
    let point = first_point(&app).await;
    let row = |ts_ms: i64, value: f64| NewReading {
        point_id: point,
        ts_ms,
        value,
        quality: protocol::Quality::Good,
    };
    let first = vec![row(10, 1.0), row(20, 2.0), row(30, 3.0)];
    assert_eq!(readings::insert(app.db(), &first).await.unwrap(), 3);
    let again = vec![row(20, 99.0), row(30, 99.0), row(40, 4.0)];
    assert_eq!(readings::insert(app.db(), &again).await.unwrap(), 1);
    assert_eq!(readings::insert(app.db(), &[]).await.unwrap(), 0);
    let latest = readings::latest(app.db(), point).await.unwrap().unwrap();
    assert_eq!((latest.ts_ms, latest.value), (40, 4.0));
    assert_eq!(readings::count(app.db(), point).await.unwrap(), 4);
}

async fn first_point(app: &crate::helpers::TestApp) -> PointId {
    use sea_orm::{EntityTrait, QueryOrder};
    let p = server::store::entities::points::Entity::find()
        .order_by_asc(server::store::entities::points::Column::Id)
        .one(app.db())
        .await
        .unwrap()
        .unwrap();
    PointId(p.id)
}
