//! sea-orm entities, one module per table. Only `store` uses these; the rest
//! of the server sees domain types.

macro_rules! no_relations {
    () => {
        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}
        impl ActiveModelBehavior for ActiveModel {}
    };
}

pub mod organisations {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "organisations")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub name: String,
        pub created_at: TimeDateTimeWithTimeZone,
    }
    no_relations!();
}

pub mod users {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "users")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        #[sea_orm(unique)]
        pub email: String,
        pub display_name: String,
        pub password_hash: String,
        pub disabled: bool,
        pub created_at: TimeDateTimeWithTimeZone,
    }
    no_relations!();
}

pub mod sites {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "sites")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub tenant_id: Uuid,
        pub name: String,
        pub timezone: String,
        pub created_at: TimeDateTimeWithTimeZone,
    }
    no_relations!();
}

pub mod memberships {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "memberships")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub tenant_id: Uuid,
        pub user_id: Uuid,
        pub site_id: Option<Uuid>,
        pub role: String,
        pub created_at: TimeDateTimeWithTimeZone,
    }
    no_relations!();
}

pub mod agents {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "agents")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub tenant_id: Uuid,
        pub site_id: Uuid,
        pub name: String,
        pub secret_hash: String,
        pub software: Option<String>,
        pub last_seen_at: Option<TimeDateTimeWithTimeZone>,
        pub last_acked_seq: Option<i64>,
        pub created_at: TimeDateTimeWithTimeZone,
    }
    no_relations!();
}

pub mod devices {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "devices")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub tenant_id: Uuid,
        pub site_id: Uuid,
        pub agent_id: Uuid,
        pub key: String,
        pub label: Option<String>,
        pub profile: Option<String>,
        pub online: Option<bool>,
        pub last_ok_at: Option<TimeDateTimeWithTimeZone>,
        pub last_error: Option<String>,
        pub updated_at: TimeDateTimeWithTimeZone,
    }
    no_relations!();
}

pub mod points {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "points")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub tenant_id: Uuid,
        pub site_id: Uuid,
        pub device_id: Uuid,
        pub key: String,
        pub label: Option<String>,
        pub unit: String,
        pub kind: String,
        pub display_min: Option<f64>,
        pub display_max: Option<f64>,
        pub alarm: bool,
        pub position: i32,
    }
    no_relations!();
}

pub mod readings {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "readings")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub point_id: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub ts_ms: i64,
        pub value: f64,
        pub quality: i16,
    }
    no_relations!();
}
