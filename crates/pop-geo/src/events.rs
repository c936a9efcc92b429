//! Event multipliers: a city event (the whole city) and location events (a circle around a
//! venue), each valid in an epoch window; all active ones multiply (e.g. 1.5 × 5.0 = 7.5).

use crate::{Error, Result, haversine_m};
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

/// The default epoch length of an events file: one hour.
pub const DEFAULT_EPOCH_MS: u64 = 3_600_000;

/// An [`EventSchedule`] with its epoch length, as loaded from an operator's events file
/// (TOML, or JSON when the name ends in `.json`). Epoch `e` is the time
/// `[e × epoch_ms, (e + 1) × epoch_ms)` in ms since the Unix epoch.
///
/// ```toml
/// epoch_ms = 3600000            # optional, default one hour
/// [[city]]                      # a festival in the whole city
/// city = "JP-13"
/// multiplier = 1.5
/// start_epoch = 492000
/// end_epoch = 492024
/// [[location]]                  # a concert at a venue
/// name = "Tokyo Dome"
/// lat = 35.7056
/// lon = 139.7519
/// radius_m = 500
/// multiplier = 5.0
/// start_epoch = 492010
/// end_epoch = 492012
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct EventCalendar {
    epoch_ms: u64,
    schedule: EventSchedule,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCity {
    city: String,
    multiplier: f64,
    start_epoch: u64,
    end_epoch: u64,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLocation {
    name: String,
    lat: f64,
    lon: f64,
    radius_m: f64,
    multiplier: f64,
    start_epoch: u64,
    end_epoch: u64,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsFile {
    #[serde(default)]
    epoch_ms: Option<u64>,
    #[serde(default)]
    city: Vec<FileCity>,
    #[serde(default)]
    location: Vec<FileLocation>,
}

impl EventCalendar {
    /// A calendar of `schedule` with epochs of `epoch_ms` (at least 1 ms).
    pub fn new(schedule: EventSchedule, epoch_ms: u64) -> Self {
        EventCalendar {
            epoch_ms: epoch_ms.max(1),
            schedule,
        }
    }

    /// Reads and checks an events file; every problem is an error naming the file and,
    /// for a bad event, its kind and index. Nothing is half-loaded.
    pub fn load(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::EventsFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Self::parse(path, &text)
    }

    /// Parses the text of an events file (`path` decides the format and names errors).
    pub fn parse(path: &std::path::Path, text: &str) -> Result<Self> {
        let file_err = |reason: String| Error::EventsFile {
            path: path.to_path_buf(),
            reason,
        };
        let file: EventsFile = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(text).map_err(|e| file_err(e.to_string()))?
        } else {
            toml::from_str(text).map_err(|e| file_err(e.to_string()))?
        };
        let epoch_ms = file.epoch_ms.unwrap_or(DEFAULT_EPOCH_MS);
        if epoch_ms == 0 {
            return Err(file_err("epoch_ms must be at least 1".into()));
        }
        let in_file = |kind, index, source| Error::EventInFile {
            path: path.to_path_buf(),
            kind,
            index,
            source: Box::new(source),
        };
        let mut schedule = EventSchedule::default();
        for (i, c) in file.city.into_iter().enumerate() {
            let city = CityId::new(c.city.clone()).map_err(|_| {
                in_file(
                    "city",
                    i,
                    Error::InvalidEvent {
                        name: c.city.clone(),
                        reason: "not a valid city id",
                    },
                )
            })?;
            schedule
                .add_city_event(CityEvent {
                    city,
                    multiplier: c.multiplier,
                    window: EpochWindow {
                        start: c.start_epoch,
                        end: c.end_epoch,
                    },
                })
                .map_err(|e| in_file("city", i, e))?;
        }
        for (i, l) in file.location.into_iter().enumerate() {
            schedule
                .add_location_event(LocationEvent {
                    name: l.name,
                    lat: l.lat,
                    lon: l.lon,
                    radius_m: l.radius_m,
                    multiplier: l.multiplier,
                    window: EpochWindow {
                        start: l.start_epoch,
                        end: l.end_epoch,
                    },
                })
                .map_err(|e| in_file("location", i, e))?;
        }
        Ok(EventCalendar { epoch_ms, schedule })
    }

    /// The epoch that `at_ms` (ms since the Unix epoch) falls in.
    pub fn epoch_of(&self, at_ms: u64) -> u64 {
        at_ms / self.epoch_ms
    }

    /// Epoch length, ms.
    pub fn epoch_ms(&self) -> u64 {
        self.epoch_ms
    }

    /// The events.
    pub fn schedule(&self) -> &EventSchedule {
        &self.schedule
    }

    /// The product of the city and location events active at `at_ms` for `city` and
    /// `location` (1.0 when none): the factor placement weights and rewards are scaled by.
    pub fn multiplier(&self, city: &CityId, location: Position, at_ms: u64) -> f64 {
        self.schedule
            .multiplier(city, location, self.epoch_of(at_ms))
    }
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
    fn an_events_file_loads_in_toml_and_json_and_applies_by_time() {
        let toml_text = r#"
epoch_ms = 1000
[[city]]
city = "JP-13"
multiplier = 1.5
start_epoch = 10
end_epoch = 20
[[location]]
name = "Tokyo Dome"
lat = 35.7056
lon = 139.7519
radius_m = 500
multiplier = 5.0
start_epoch = 15
end_epoch = 16
"#;
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("events.toml");
        std::fs::write(&t, toml_text).unwrap();
        let cal = EventCalendar::load(&t).unwrap();
        let json = r#"{"epoch_ms": 1000,
            "city": [{"city": "JP-13", "multiplier": 1.5, "start_epoch": 10, "end_epoch": 20}],
            "location": [{"name": "Tokyo Dome", "lat": 35.7056, "lon": 139.7519,
              "radius_m": 500, "multiplier": 5.0, "start_epoch": 15, "end_epoch": 16}]}"#;
        let j = dir.path().join("events.json");
        std::fs::write(&j, json).unwrap();
        assert_eq!(EventCalendar::load(&j).unwrap(), cal);
        let tokyo = city("JP-13");
        let dome = Position::from_degrees(35.7057, 139.7520).unwrap();
        let shinjuku = Position::from_degrees(35.6895, 139.6917).unwrap();
        assert_eq!(cal.multiplier(&tokyo, dome, 9_999), 1.0);
        assert_eq!(cal.multiplier(&tokyo, dome, 10_000), 1.5);
        assert_eq!(cal.multiplier(&tokyo, dome, 15_500), 7.5);
        assert_eq!(cal.multiplier(&tokyo, shinjuku, 15_500), 1.5);
        assert_eq!(cal.multiplier(&city("JP-27"), dome, 15_500), 5.0);
        assert_eq!(cal.multiplier(&tokyo, dome, 20_000), 1.0);
    }

    #[test]
    fn a_bad_events_file_is_refused_naming_the_problem() {
        let p = std::path::Path::new("festival.toml");
        let check = |text: &str, needle: &str| {
            let e = EventCalendar::parse(p, text).unwrap_err().to_string();
            assert!(e.contains("festival.toml") && e.contains(needle), "{e}");
        };
        check(
            "[[city]]\ncity = \"JP-13\"\nmultiplier = 0\nstart_epoch = 1\nend_epoch = 2\n",
            "city event #0",
        );
        check(
            "[[location]]\nname = \"x\"\nlat = 95\nlon = 0\nradius_m = 1\nmultiplier = 2\nstart_epoch = 1\nend_epoch = 2\n",
            "centre is not a valid",
        );
        check(
            "[[city]]\ncity = \"JP-13\"\nmultiplier = 2\nstart_epoch = 3\nend_epoch = 2\n",
            "window is empty",
        );
        check("[[city]]\ncity = \"JP-13\"\nmultipler = 2\n", "multipler");
        check("epoch_ms = 0\n", "epoch_ms");
        let e = EventCalendar::load(std::path::Path::new("/nonexistent/events.toml")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/events.toml"), "{e}");
    }
}
