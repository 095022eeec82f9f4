//! The simulated heat pump's physics: pure, deterministic for a given seed.
//!
//! Plausible rather than accurate: the outdoor temperature drifts slowly; both
//! heating circuits follow a heating curve of it (L1 radiators steeper than
//! L2 floor heating) with a little sensor noise; the compressor cycles on a
//! fixed period and heats the hot-water tank while it runs (top faster than
//! bottom), with a hot-gas temperature of 70–100 °C; otherwise the tank cools
//! slowly and the hot gas falls towards the room temperature of the plant room.
//! The electric heater comes on rarely, for a short while.

use std::time::Duration;

use rand::{Rng, SeedableRng, rngs::StdRng};

/// Tunables of the model.
#[derive(Debug, Clone)]
pub struct ModelOptions {
    /// Outdoor temperature at start, °C.
    pub outdoor_start: f64,
    /// Length of one compressor on/off cycle.
    pub compressor_period: Duration,
    /// Share of the period the compressor runs, 0..=1.
    pub compressor_duty: f64,
    /// Seed of the noise generator.
    pub seed: u64,
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions {
            outdoor_start: -5.0,
            compressor_period: Duration::from_secs(120),
            compressor_duty: 0.6,
            seed: 0x0E_4203,
        }
    }
}

/// The plant's state; every field is what the controller would display.
#[derive(Debug, Clone, PartialEq)]
pub struct PlantState {
    /// Outdoor temperature, °C.
    pub outdoor_temp: f64,
    /// L1 (radiator) supply water, °C.
    pub l1_supply_temp: f64,
    /// L2 (floor) supply water, °C.
    pub l2_supply_temp: f64,
    /// L1 room temperature, °C.
    pub l1_room_temp: f64,
    /// L1 return water, °C.
    pub l1_return_temp: f64,
    /// Hot-water tank top, °C.
    pub dhw_tank_top_temp: f64,
    /// Hot-water tank bottom, °C.
    pub dhw_tank_bottom_temp: f64,
    /// Compressor hot gas, °C.
    pub hot_gas_temp: f64,
    /// Compressor running.
    pub compressor_running: bool,
    /// Electric heater on.
    pub electric_heater_on: bool,
    /// Alarm A active.
    pub alarm_a: bool,
    /// Alarm B active.
    pub alarm_b: bool,
}

/// State plus the clock and noise that move it.
#[derive(Debug)]
pub struct Model {
    opts: ModelOptions,
    state: PlantState,
    elapsed: Duration,
    heater_left: Duration,
    outdoor_target: f64,
    rng: StdRng,
}

/// The heating curve: supply setpoint for an outdoor temperature, clamped.
fn heating_curve(outdoor: f64, slope: f64, min: f64, max: f64) -> f64 {
    (20.0 + (20.0 - outdoor) * slope).clamp(min, max)
}

impl Model {
    /// A plant in a steady state for `opts.outdoor_start`.
    pub fn new(opts: ModelOptions) -> Self {
        let o = opts.outdoor_start;
        let state = PlantState {
            outdoor_temp: o,
            l1_supply_temp: heating_curve(o, 0.9, 20.0, 60.0),
            l2_supply_temp: heating_curve(o, 0.5, 20.0, 38.0),
            l1_room_temp: 21.5,
            l1_return_temp: heating_curve(o, 0.9, 20.0, 60.0) - 6.0,
            dhw_tank_top_temp: 50.0,
            dhw_tank_bottom_temp: 42.0,
            hot_gas_temp: 80.0,
            compressor_running: true,
            electric_heater_on: false,
            alarm_a: false,
            alarm_b: false,
        };
        Model {
            rng: StdRng::seed_from_u64(opts.seed),
            outdoor_target: o,
            opts,
            state,
            elapsed: Duration::ZERO,
            heater_left: Duration::ZERO,
        }
    }

    /// The current state.
    pub fn state(&self) -> &PlantState {
        &self.state
    }

    /// Raise or clear an alarm.
    pub fn set_alarm(&mut self, which: Alarm, on: bool) {
        match which {
            Alarm::A => self.state.alarm_a = on,
            Alarm::B => self.state.alarm_b = on,
        }
    }

    /// Advance by `dt`.
    pub fn step(&mut self, dt: Duration) {
        self.elapsed += dt;
        let secs = dt.as_secs_f64();
        let s = &mut self.state;
        let rng = &mut self.rng;

        // Outdoor: wander towards a target that itself moves now and then.
        if rng.random_bool((secs / 600.0).clamp(0.0, 1.0)) {
            self.outdoor_target =
                (self.opts.outdoor_start + rng.random_range(-6.0..6.0)).clamp(-35.0, 30.0);
        }
        s.outdoor_temp += (self.outdoor_target - s.outdoor_temp) * (secs / 900.0).min(1.0)
            + rng.random_range(-0.02..0.02);

        // Heating circuits follow their curves with a lag and a little noise.
        let lag = (secs / 60.0).min(1.0);
        let l1 = heating_curve(s.outdoor_temp, 0.9, 20.0, 60.0);
        let l2 = heating_curve(s.outdoor_temp, 0.5, 20.0, 38.0);
        s.l1_supply_temp += (l1 - s.l1_supply_temp) * lag + rng.random_range(-0.15..0.15);
        s.l2_supply_temp += (l2 - s.l2_supply_temp) * lag + rng.random_range(-0.1..0.1);
        s.l1_return_temp +=
            (s.l1_supply_temp - 6.0 - s.l1_return_temp) * lag + rng.random_range(-0.1..0.1);
        s.l1_room_temp +=
            (21.5 - s.l1_room_temp) * (secs / 3600.0).min(1.0) + rng.random_range(-0.02..0.02);

        // Compressor cycle.
        let period = self.opts.compressor_period.as_secs_f64().max(1.0);
        let phase = (self.elapsed.as_secs_f64() % period) / period;
        s.compressor_running = phase < self.opts.compressor_duty.clamp(0.0, 1.0);

        // Electric heater: rarely, briefly.
        if self.heater_left > Duration::ZERO {
            self.heater_left = self.heater_left.saturating_sub(dt);
        } else if rng.random_bool((secs / 1800.0).clamp(0.0, 1.0)) {
            self.heater_left = Duration::from_secs(30);
        }
        s.electric_heater_on = self.heater_left > Duration::ZERO;

        // Tank: charged by the compressor (and the heater), cools slowly.
        let heat = if s.compressor_running { 1.0 } else { 0.0 }
            + if s.electric_heater_on { 0.5 } else { 0.0 };
        if heat > 0.0 {
            s.dhw_tank_top_temp +=
                0.05 * heat * secs * (58.0 - s.dhw_tank_top_temp).max(0.0) / 10.0;
            s.dhw_tank_bottom_temp +=
                0.08 * heat * secs * (52.0 - s.dhw_tank_bottom_temp).max(0.0) / 10.0;
        } else {
            s.dhw_tank_top_temp -= 0.004 * secs;
            s.dhw_tank_bottom_temp -= 0.008 * secs;
        }
        s.dhw_tank_top_temp = s.dhw_tank_top_temp.clamp(10.0, 65.0);
        s.dhw_tank_bottom_temp = s.dhw_tank_bottom_temp.clamp(10.0, s.dhw_tank_top_temp);

        // Hot gas: high while running, cools towards the plant room otherwise.
        let target = if s.compressor_running {
            85.0 + 10.0 * ((self.elapsed.as_secs_f64() / 37.0).sin())
        } else {
            30.0
        };
        s.hot_gas_temp +=
            (target - s.hot_gas_temp) * (secs / 20.0).min(1.0) + rng.random_range(-0.3..0.3);
    }
}

/// Which alarm lamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alarm {
    /// Alarm A (status word bit 2).
    A,
    /// Alarm B (status word bit 3).
    B,
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_secs(1);

    #[test]
    fn values_move_every_tick() {
        let mut m = Model::new(ModelOptions::default());
        let before = m.state().clone();
        m.step(TICK);
        assert_ne!(before.outdoor_temp, m.state().outdoor_temp);
        assert_ne!(before.l1_supply_temp, m.state().l1_supply_temp);
    }

    #[test]
    fn the_compressor_cycles_and_the_hot_gas_follows_it() {
        let mut m = Model::new(ModelOptions {
            compressor_period: Duration::from_secs(100),
            compressor_duty: 0.5,
            ..ModelOptions::default()
        });
        let mut seen_on = false;
        let mut seen_off = false;
        for i in 0..300 {
            m.step(TICK);
            let s = m.state();
            if i % 100 == 45 {
                assert!(
                    s.compressor_running && (70.0..=100.0).contains(&s.hot_gas_temp),
                    "{s:?}"
                );
                seen_on = true;
            }
            if i % 100 == 98 {
                assert!(!s.compressor_running && s.hot_gas_temp < 60.0, "{s:?}");
                seen_off = true;
            }
        }
        assert!(seen_on && seen_off);
    }

    #[test]
    fn the_tank_warms_while_the_compressor_runs_and_cools_otherwise() {
        let mut m = Model::new(ModelOptions {
            compressor_duty: 1.0,
            ..ModelOptions::default()
        });
        let t0 = m.state().dhw_tank_top_temp;
        (0..60).for_each(|_| m.step(TICK));
        assert!(m.state().dhw_tank_top_temp > t0);
        let mut m = Model::new(ModelOptions {
            compressor_duty: 0.0,
            ..ModelOptions::default()
        });
        (0..60).for_each(|_| m.step(TICK));
        assert!(m.state().dhw_tank_top_temp < t0 || m.state().electric_heater_on);
    }

    #[test]
    fn supply_water_is_warmer_when_it_is_colder_outside() {
        let mut cold = Model::new(ModelOptions {
            outdoor_start: -20.0,
            ..ModelOptions::default()
        });
        let mut mild = Model::new(ModelOptions {
            outdoor_start: 5.0,
            ..ModelOptions::default()
        });
        (0..30).for_each(|_| {
            cold.step(TICK);
            mild.step(TICK);
        });
        assert!(cold.state().l1_supply_temp > mild.state().l1_supply_temp + 10.0);
        assert!(cold.state().l2_supply_temp > mild.state().l2_supply_temp);
    }

    #[test]
    fn values_stay_within_the_display_ranges_for_a_simulated_day() {
        let mut m = Model::new(ModelOptions::default());
        for _ in 0..86_400 / 10 {
            m.step(Duration::from_secs(10));
            let s = m.state();
            assert!((-40.0..=40.0).contains(&s.outdoor_temp), "{s:?}");
            assert!(
                (0.0..=70.0).contains(&s.l1_supply_temp)
                    && (0.0..=70.0).contains(&s.l2_supply_temp),
                "{s:?}"
            );
            assert!(
                (0.0..=90.0).contains(&s.dhw_tank_top_temp)
                    && (0.0..=90.0).contains(&s.dhw_tank_bottom_temp),
                "{s:?}"
            );
            assert!((0.0..=130.0).contains(&s.hot_gas_temp), "{s:?}");
        }
    }
}
