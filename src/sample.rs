//! Realistic synthetic reports for demos, tests and benchmarks.
//!
//! Deterministic for a given seed: routes, nationalities, vessel types, dates and
//! scopes vary the way the region's real reporting does, and every report passes
//! validation.

use uuid::Uuid;

use crate::pb;

/// Origins, transit and destination countries seen on the region's routes.
const ORIGINS: [&str; 10] = [
    "AFG", "IRN", "IRQ", "LKA", "MMR", "BGD", "PAK", "VNM", "CHN", "SOM",
];
const TRANSIT: [&str; 6] = ["MYS", "IDN", "THA", "TLS", "PNG", "SGP"];
const DESTINATIONS: [&str; 4] = ["AUS", "NZL", "MYS", "IDN"];
/// A place where incidents happen: its name, where it is (hundredths of a degree:
/// latitude, longitude) and the sea off it.
struct Place {
    name: &'static str,
    at: (i32, i32),
    sea: pb::SeaArea,
}

/// Where a reporting state's incidents happen (its places; any other state: somewhere
/// in the region's waters, without a place name) and the currencies its fees are quoted
/// in.
struct Region {
    places: &'static [Place],
    currencies: &'static [&'static str],
}

/// The region of `state`.
fn region(state: &str) -> Region {
    use pb::SeaArea as S;
    match state {
        "AUS" => Region {
            places: &[
                Place {
                    name: "Christmas Island",
                    at: (-1049, 10564),
                    sea: S::IndianOcean,
                },
                Place {
                    name: "Ashmore Reef",
                    at: (-1225, 12303),
                    sea: S::TimorSea,
                },
                Place {
                    name: "Darwin",
                    at: (-1246, 13084),
                    sea: S::ArafuraSea,
                },
                Place {
                    name: "Broome",
                    at: (-1796, 12224),
                    sea: S::IndianOcean,
                },
            ],
            currencies: &["AUD", "USD"],
        },
        "IDN" => Region {
            places: &[
                Place {
                    name: "Kupang",
                    at: (-1016, 12360),
                    sea: S::TimorSea,
                },
                Place {
                    name: "Rote Island",
                    at: (-1074, 12306),
                    sea: S::TimorSea,
                },
                Place {
                    name: "Tanjung Pinang",
                    at: (92, 10445),
                    sea: S::StraitOfMalacca,
                },
                Place {
                    name: "Cilacap",
                    at: (-773, 10900),
                    sea: S::IndianOcean,
                },
            ],
            currencies: &["IDR", "USD"],
        },
        "THA" => Region {
            places: &[
                Place {
                    name: "Satun",
                    at: (662, 10007),
                    sea: S::AndamanSea,
                },
                Place {
                    name: "Ranong",
                    at: (996, 9863),
                    sea: S::AndamanSea,
                },
                Place {
                    name: "Phuket",
                    at: (789, 9839),
                    sea: S::AndamanSea,
                },
            ],
            currencies: &["THB", "USD"],
        },
        "MYS" => Region {
            places: &[
                Place {
                    name: "Langkawi",
                    at: (635, 9980),
                    sea: S::AndamanSea,
                },
                Place {
                    name: "Port Klang",
                    at: (300, 10139),
                    sea: S::StraitOfMalacca,
                },
            ],
            currencies: &["USD"],
        },
        _ => Region {
            places: &[Place {
                name: "",
                at: (-800, 11000),
                sea: S::IndianOcean,
            }],
            currencies: &["USD"],
        },
    }
}

/// How far a point lies from its place, at most, in hundredths of a degree.
const R: u64 = 45;
const R_I32: i32 = 45;

/// A fee per person in `currency`, in the range and the round units it is quoted in.
fn fee(rng: &mut Rng, currency: &str) -> u64 {
    // (smallest, largest, unit): about USD 500 to 10,000.
    let (low, high, unit) = match currency {
        "AUD" => (800, 15_000, 100),
        "IDR" => (8_000_000, 150_000_000, 500_000),
        "THB" => (17_000, 350_000, 1_000),
        _ => (500, 10_000, 100),
    };
    low + unit * rng.below((high - low) / unit + 1)
}

/// A small deterministic generator (`SplitMix64`): reproducible data from a seed.
pub struct Rng(u64);

impl Rng {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        // Invariant: called with non-empty constant tables only.
        &items[usize::try_from(self.below(items.len() as u64)).unwrap_or(0)]
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn count(&mut self, max: u64) -> u32 {
        u32::try_from(self.below(max + 1)).unwrap_or(0)
    }
}

/// Mixes a seed with a label (FNV-1a), so different labels give different streams.
pub fn seed_for(seed: u64, label: &str) -> u64 {
    label.bytes().fold(seed ^ 0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Generates one synthetic report for `state`, with an incident between 2019 and 2025.
// Long because the report model is: one block per part of it.
#[allow(clippy::too_many_lines)]
pub fn report(rng: &mut Rng, state: &str) -> pb::Report {
    let id = Uuid::from_u64_pair(rng.next_u64(), rng.next_u64());
    // Make it a valid v4 UUID so that it looks like what a real node would send.
    let id = uuid::Builder::from_random_bytes(*id.as_bytes()).into_uuid();
    let date = format!(
        "{}-{:02}-{:02}",
        2019 + rng.below(7),
        1 + rng.below(12),
        1 + rng.below(28)
    );
    let maritime = rng.chance(45);
    let region = region(state);
    let place = rng.pick(region.places);
    let total = 1 + rng.count(if maritime { 150 } else { 40 });
    let mut remaining = u64::from(total);
    let mut by_nationality = Vec::new();
    let mut seen = Vec::new();
    for _ in 0..=rng.below(3) {
        let nationality = *rng.pick(&ORIGINS);
        if remaining == 0 || seen.contains(&nationality) {
            break;
        }
        let count = 1 + rng.below(remaining);
        remaining -= count;
        seen.push(nationality);
        by_nationality.push(pb::NationalityCount {
            nationality: nationality.to_owned(),
            count: u32::try_from(count).unwrap_or(1),
        });
    }
    let minors = rng.count(u64::from(total) / 3);
    let deaths = if rng.chance(10) {
        rng.count(u64::from(total) / 4)
    } else {
        0
    };
    let missing = if rng.chance(8) {
        rng.count(u64::from(total - deaths) / 4)
    } else {
        0
    };
    let origin = seen.first().copied().unwrap_or(*rng.pick(&ORIGINS));
    let scope = match rng.below(10) {
        0 => pb::SharingScope::AggregateOnly,
        1 | 2 => pb::SharingScope::ListedStates,
        _ => pb::SharingScope::AllContributors,
    };
    let details = if maritime {
        pb::report::Details::Maritime(pb::MaritimeMovement {
            event: i32::try_from(1 + rng.below(7)).unwrap_or(1),
            vessel_type: *rng.pick(&[1, 2, 2, 2, 3, 5, 6]),
            flag_state: if rng.chance(60) {
                "IDN".to_owned()
            } else {
                String::new()
            },
            imo_number: String::new(),
            mmsi: if rng.chance(20) {
                format!("{:09}", 525_000_000 + rng.below(999_999))
            } else {
                String::new()
            },
            persons_on_board: total + rng.count(5),
            sar_region: "AUS SRR".to_owned(),
            disembarkation_country: if rng.chance(50) {
                state.to_owned()
            } else {
                String::new()
            },
            disembarkation_port: String::new(),
        })
    } else {
        let detected = rng.count(6);
        // The modus operandi follows from the means of transport.
        let (modus, transport) = match rng.below(10) {
            0..=3 => (pb::ModusOperandi::Sea, vec![pb::TransportMeans::Boat]),
            4..=6 => (
                pb::ModusOperandi::Land,
                vec![*rng.pick(&[
                    pb::TransportMeans::Car,
                    pb::TransportMeans::Truck,
                    pb::TransportMeans::Bus,
                ])],
            ),
            7 | 8 => (
                pb::ModusOperandi::Air,
                vec![pb::TransportMeans::CommercialFlight],
            ),
            _ => (
                pb::ModusOperandi::Mixed,
                vec![pb::TransportMeans::Boat, pb::TransportMeans::Truck],
            ),
        };
        pb::report::Details::Smuggling(pb::SmugglingIncident {
            modus_operandi: modus as i32,
            transport: transport.into_iter().map(|t| t as i32).collect(),
            // Hidden in what the modus operandi travels in.
            concealment: *rng.pick(match modus {
                pb::ModusOperandi::Sea => &[1, 5][..],
                pb::ModusOperandi::Land => &[1, 2, 3, 4][..],
                pb::ModusOperandi::Air => &[1, 6][..],
                _ => &[1, 3, 5][..],
            }),
            facilitators_detected: detected,
            facilitators_arrested: rng.count(u64::from(detected)),
            fee_per_person: rng.chance(60).then(|| {
                let currency = *rng.pick(region.currencies);
                pb::Money {
                    amount: fee(rng, currency),
                    currency: currency.to_owned(),
                }
            }),
            fraudulent_documents: if rng.chance(25) {
                vec![pb::FraudulentDocument {
                    document_type: pb::DocumentType::Passport as i32,
                    issuing_country: (*rng.pick(&DESTINATIONS)).to_owned(),
                    fraud: i32::try_from(1 + rng.below(4)).unwrap_or(1),
                    count: 1 + rng.count(3),
                }]
            } else {
                Vec::new()
            },
            criminal_justice: Some(pb::CriminalJustice {
                investigation_opened: rng.chance(70),
                persons_prosecuted: 0,
                persons_convicted: 0,
            }),
        })
    };
    pb::Report {
        report_id: id.to_string(),
        version: 1,
        reporting_state: state.to_owned(),
        incident_date: date,
        incident_time: if rng.chance(50) {
            format!("{:02}:{:02}", rng.below(24), rng.below(60))
        } else {
            String::new()
        },
        location: Some(pb::Location {
            country: state.to_owned(),
            place: place.name.to_owned(),
            point: rng.chance(70).then(|| {
                // Within about 50 km of the place, in hundredths of a degree divided once:
                // the number a parser reads from the decimal (no float noise).
                let mut near = |at: i32| {
                    let offset = i32::try_from(rng.below(R * 2 + 1)).unwrap_or(0) - R_I32;
                    f64::from(at + offset) / 100.0
                };
                pb::GeoPoint {
                    latitude: near(place.at.0),
                    longitude: near(place.at.1),
                }
            }),
            sea_area: if maritime { place.sea as i32 } else { 0 },
        }),
        route: Some({
            let destination = *rng.pick(&DESTINATIONS);
            // A transit country is neither the origin nor the destination.
            let transit: Vec<String> = [*rng.pick(&TRANSIT)]
                .into_iter()
                .filter(|t| *t != origin && *t != destination)
                .map(str::to_owned)
                .collect();
            pb::Route {
                origin: origin.to_owned(),
                transit,
                intended_destination: destination.to_owned(),
            }
        }),
        persons: Some(pb::Persons {
            total,
            by_nationality,
            minors,
            unaccompanied_minors: rng.count(u64::from(minors)),
            women: rng.count(u64::from(total) / 2),
            deaths,
            missing,
        }),
        narrative: "Synthetic report generated for testing; no real persons.".to_owned(),
        sharing: Some(pb::Sharing {
            scope: scope as i32,
            states: if scope == pb::SharingScope::ListedStates {
                vec!["AUS".to_owned(), "IDN".to_owned()]
            } else {
                Vec::new()
            },
        }),
        reliability: Some(pb::Reliability {
            source: i32::try_from(1 + rng.below(4)).unwrap_or(1),
            information: i32::try_from(1 + rng.below(4)).unwrap_or(1),
        }),
        details: Some(details),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_report_is_valid_and_ids_are_unique() {
        let mut rng = Rng::new(7);
        let now = time::OffsetDateTime::now_utc();
        let mut ids = std::collections::HashSet::new();
        for i in 0..2000 {
            let state = ["AUS", "IDN", "THA", "MYS", "NZL"][i % 5];
            let r = report(&mut rng, state);
            assert!(ids.insert(r.report_id.clone()));
            looks_real(&r);
            if let Err(e) = crate::report::validate(r, now) {
                panic!("sample {i} invalid: {e}");
            }
        }
    }

    /// Places, seas and points of the reporting state; a modus operandi that fits the
    /// transport; a fee in its currency's range and unit; points in hundredths of a degree
    /// exactly as a parser reads them.
    fn looks_real(r: &pb::Report) {
        let region = region(&r.reporting_state);
        let location = r.location.clone().unwrap_or_default();
        let place = region
            .places
            .iter()
            .find(|p| p.name == location.place)
            .unwrap_or_else(|| panic!("{location:?} is not a place of {}", r.reporting_state));
        if let Some(p) = location.point {
            let hundredths = |v: f64| {
                let h = (v * 100.0).round();
                assert_eq!((h / 100.0).to_bits(), v.to_bits(), "float noise in {v}");
                #[allow(clippy::cast_possible_truncation)]
                let h = h as i32;
                h
            };
            assert!(
                (hundredths(p.latitude) - place.at.0).abs() <= R_I32,
                "{p:?} far from {}",
                place.name
            );
            assert!(
                (hundredths(p.longitude) - place.at.1).abs() <= R_I32,
                "{p:?} far from {}",
                place.name
            );
        }
        let route = r.route.clone().unwrap_or_default();
        assert!(
            !route.transit.contains(&route.origin)
                && !route.transit.contains(&route.intended_destination),
            "{route:?}"
        );
        match &r.details {
            Some(pb::report::Details::Maritime(_)) => {
                assert_eq!(
                    location.sea_area, place.sea as i32,
                    "the sea off {}",
                    place.name
                );
            }
            Some(pb::report::Details::Smuggling(s)) => {
                use pb::{ModusOperandi as M, TransportMeans as T};
                let by = |t: T| s.transport.contains(&(t as i32));
                let fits = match M::try_from(s.modus_operandi).unwrap() {
                    M::Sea => by(T::Boat),
                    M::Air => by(T::CommercialFlight),
                    M::Land => by(T::Car) || by(T::Truck) || by(T::Bus),
                    M::Mixed => s.transport.len() > 1,
                    M::Unspecified => false,
                };
                assert!(fits, "{s:?}");
                let hidden = pb::Concealment::try_from(s.concealment).unwrap();
                let plausible = match M::try_from(s.modus_operandi).unwrap() {
                    M::Sea => matches!(hidden, pb::Concealment::None | pb::Concealment::OnVessel),
                    M::Air => matches!(
                        hidden,
                        pb::Concealment::None | pb::Concealment::FraudulentDocuments
                    ),
                    M::Land => !matches!(hidden, pb::Concealment::OnVessel),
                    _ => true,
                };
                assert!(plausible, "{s:?}");
                if let Some(fee) = &s.fee_per_person {
                    assert!(
                        region.currencies.contains(&fee.currency.as_str()),
                        "{fee:?}"
                    );
                    let usd = match fee.currency.as_str() {
                        "AUD" => fee.amount * 65 / 100,
                        "IDR" => fee.amount / 16_000,
                        "THB" => fee.amount / 35,
                        _ => fee.amount,
                    };
                    assert!((400..=11_000).contains(&usd), "{fee:?}: about USD {usd}");
                }
            }
            None => panic!("no details"),
        }
    }
}
