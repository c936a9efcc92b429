//! Event multipliers: a city event (the whole city) and location events (a circle around a
//! venue), each valid in an epoch window; all active ones multiply (e.g. 1.5 × 5.0 = 7.5).

use crate::{Error, Result};
use dag_core::{CityId, Position};

/// Epochs `start..end` (half-open: valid from `start`, no longer at `end`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochWindow {
    /// First epoch in which the event applies.
    pub start: u64,
    /// First epoch in which it no longer applies.
    pub end: u64,
}

impl EpochWindow {
    /// True when `epoch` lies in the window.
    pub fn contains(&self, epoch: u64) -> bool {
        self.start <= epoch && epoch < self.end
    }
}

/// An event covering a whole city.
#[derive(Debug, Clone, PartialEq)]
pub struct CityEvent {
    /// The city.
    pub city: CityId,
    /// Factor applied while active (finite, > 0).
    pub multiplier: f64,
    /// When it is active.
    pub window: EpochWindow,
}

/// An event at a place: positions within `radius_m` of the centre get the multiplier.
#[derive(Debug, Clone, PartialEq)]
pub struct LocationEvent {
    /// Name (for logs and errors).
    pub name: String,
    /// Centre latitude, degrees.
    pub lat: f64,
    /// Centre longitude, degrees.
    pub lon: f64,
    /// Radius in metres (finite, ≥ 0).
    pub radius_m: f64,
    /// Factor applied while active (finite, > 0).
    pub multiplier: f64,
    /// When it is active.
    pub window: EpochWindow,
}

/// The city and location events in force; [`EventSchedule::multiplier`] combines them.
///
/// ```
/// use pop_geo::{EventSchedule, CityEvent, LocationEvent, EpochWindow};
/// use dag_core::{CityId, Position};
/// let tokyo = CityId::new("JP-13").unwrap();
/// let mut events = EventSchedule::default();
/// let window = EpochWindow { start: 10, end: 20 };
/// events.add_city_event(CityEvent { city: tokyo.clone(), multiplier: 1.5, window }).unwrap();
/// events.add_location_event(LocationEvent {
///     name: "Tokyo Dome".into(), lat: 35.7056, lon: 139.7519, radius_m: 500.0,
///     multiplier: 5.0, window,
/// }).unwrap();
/// let at_dome = Position::from_degrees(35.7057, 139.7520).unwrap();
/// assert_eq!(events.multiplier(&tokyo, at_dome, 15), 7.5);
/// assert_eq!(events.multiplier(&tokyo, at_dome, 20), 1.0);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventSchedule {
    city: Vec<CityEvent>,
    location: Vec<LocationEvent>,
}

fn check_common(name: &str, multiplier: f64, window: EpochWindow) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidEvent {
            name: name.to_string(),
            reason,
        })
    };
    if !multiplier.is_finite() || multiplier <= 0.0 {
        return bad("multiplier must be a finite number greater than 0");
    }
    if window.start >= window.end {
        return bad("epoch window is empty (start must be before end)");
    }
    Ok(())
}

impl EventSchedule {
    /// Adds a city event.
    pub fn add_city_event(&mut self, event: CityEvent) -> Result<()> {
        check_common(event.city.as_str(), event.multiplier, event.window)?;
        self.city.push(event);
        Ok(())
    }

    /// Adds a location event.
    pub fn add_location_event(&mut self, event: LocationEvent) -> Result<()> {
        check_common(&event.name, event.multiplier, event.window)?;
        if !event.radius_m.is_finite() || event.radius_m < 0.0 {
            return Err(Error::InvalidEvent {
                name: event.name,
                reason: "radius must be a finite number of metres, at least 0",
            });
        }
        if Position::from_degrees(event.lat, event.lon).is_err() {
            return Err(Error::InvalidEvent {
                name: event.name,
                reason: "centre is not a valid latitude/longitude",
            });
        }
        self.location.push(event);
        Ok(())
    }

    /// Drops events whose window ended at or before `epoch`.
    pub fn prune(&mut self, epoch: u64) {
        self.city.retain(|e| e.window.end > epoch);
        self.location.retain(|e| e.window.end > epoch);
    }

    /// The product of every event active at `epoch` that covers `city` or `pos`; 1.0 when none.
    pub fn multiplier(&self, city: &CityId, pos: Position, epoch: u64) -> f64 {
        let mut m = 1.0;
        for e in &self.city {
            if e.window.contains(epoch) && &e.city == city {
                m *= e.multiplier;
            }
        }
        for e in &self.location {
            if e.window.contains(epoch)
                && haversine_m(e.lat, e.lon, pos.lat(), pos.lon()) <= e.radius_m
            {
                m *= e.multiplier;
            }
        }
        m
    }
}

/// Great-circle distance in metres (mean Earth radius 6 371 008.8 m).
pub fn haversine_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    const R: f64 = 6_371_008.8;
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * R * a.sqrt().min(1.0).asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn city(s: &str) -> CityId {
        CityId::new(s).unwrap()
    }

    #[test]
    fn windows_are_half_open_and_events_multiply() {
        let mut ev = EventSchedule::default();
        let w = EpochWindow { start: 5, end: 8 };
        ev.add_city_event(CityEvent {
            city: city("NP-Kathmandu-Kathmandu"),
            multiplier: 1.5,
            window: w,
        })
        .unwrap();
        ev.add_city_event(CityEvent {
            city: city("NP-Kathmandu-Kathmandu"),
            multiplier: 2.0,
            window: EpochWindow { start: 7, end: 9 },
        })
        .unwrap();
        let p = Position::from_degrees(27.7, 85.32).unwrap();
        let k = city("NP-Kathmandu-Kathmandu");
        assert_eq!(ev.multiplier(&k, p, 4), 1.0);
        assert_eq!(ev.multiplier(&k, p, 5), 1.5);
        assert_eq!(ev.multiplier(&k, p, 7), 3.0);
        assert_eq!(ev.multiplier(&k, p, 8), 2.0);
        assert_eq!(ev.multiplier(&city("JP-13"), p, 7), 1.0);
        ev.prune(8);
        assert_eq!(ev.multiplier(&k, p, 7), 2.0);
    }

    #[test]
    fn location_event_radius() {
        let mut ev = EventSchedule::default();
        ev.add_location_event(LocationEvent {
            name: "stadium".into(),
            lat: 0.0,
            lon: 0.0,
            radius_m: 1000.0,
            multiplier: 5.0,
            window: EpochWindow { start: 0, end: 1 },
        })
        .unwrap();
        let c = city("X");
        // 0.008° of latitude ≈ 890 m; 0.01° ≈ 1112 m.
        assert_eq!(
            ev.multiplier(&c, Position::from_degrees(0.008, 0.0).unwrap(), 0),
            5.0
        );
        assert_eq!(
            ev.multiplier(&c, Position::from_degrees(0.01, 0.0).unwrap(), 0),
            1.0
        );
    }

    #[test]
    fn rejects_bad_events() {
        let mut ev = EventSchedule::default();
        let w = EpochWindow { start: 1, end: 1 };
        let e = ev
            .add_city_event(CityEvent {
                city: city("JP-13"),
                multiplier: 2.0,
                window: w,
            })
            .unwrap_err();
        assert!(e.to_string().contains("JP-13"), "{e}");
        for m in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(
                ev.add_city_event(CityEvent {
                    city: city("JP-13"),
                    multiplier: m,
                    window: EpochWindow { start: 0, end: 1 },
                })
                .is_err()
            );
        }
    }

    #[test]
    fn haversine_tokyo_osaka() {
        let d = haversine_m(35.6895, 139.69171, 34.69379, 135.50107) / 1000.0;
        assert!((d - 397.0).abs() < 5.0, "{d}");
    }
}
