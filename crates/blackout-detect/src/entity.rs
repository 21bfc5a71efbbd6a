//! The things a verdict is about: a country, a network (ASN) within it, or a region.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

use blackout_model::observation::is_country_code;

/// A country, an ASN within a country, or a region within a country.
///
/// Text form (used in JSON, CSV and metrics): `KZ`, `KZ/AS9198`, `KZ/Almaty`; an ASN whose
/// country is not known (aggregate series such as `AS9198`) has an empty country and is
/// written `AS9198`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntityKey {
    Country(String),
    Asn { country: String, asn: u32 },
    Region { country: String, region: String },
}

impl EntityKey {
    pub fn country(&self) -> &str {
        match self {
            EntityKey::Country(c) => c,
            EntityKey::Asn { country, .. } | EntityKey::Region { country, .. } => country,
        }
    }

    pub fn is_country(&self) -> bool {
        matches!(self, EntityKey::Country(_))
    }

    /// The country an ASN or region belongs to, when it is known.
    pub fn parent(&self) -> Option<EntityKey> {
        match self {
            EntityKey::Country(_) => None,
            EntityKey::Asn { country, .. } | EntityKey::Region { country, .. } => {
                (!country.is_empty()).then(|| EntityKey::Country(country.clone()))
            }
        }
    }
}

impl fmt::Display for EntityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntityKey::Country(c) => f.write_str(c),
            EntityKey::Asn { country, asn } if country.is_empty() => write!(f, "AS{asn}"),
            EntityKey::Asn { country, asn } => write!(f, "{country}/AS{asn}"),
            EntityKey::Region { country, region } => write!(f, "{country}/{region}"),
        }
    }
}

fn parse_asn(s: &str) -> Option<u32> {
    let digits = s.strip_prefix("AS").or_else(|| s.strip_prefix("as"))?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl FromStr for EntityKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some(asn) = parse_asn(s) {
            return Ok(EntityKey::Asn {
                country: String::new(),
                asn,
            });
        }
        let (country, rest) = match s.split_once('/') {
            Some((c, r)) => (c, Some(r)),
            None => (s, None),
        };
        if !is_country_code(country) {
            return Err(format!(
                "entity {s:?}: expected CC, CC/<region>, CC/AS<n> or AS<n> (CC = ISO 3166 alpha-2, upper case)"
            ));
        }
        let country = country.to_string();
        match rest {
            None => Ok(EntityKey::Country(country)),
            Some(r) if r.trim().is_empty() => Err(format!("entity {s:?}: empty region")),
            Some(r) => match parse_asn(r) {
                Some(asn) => Ok(EntityKey::Asn { country, asn }),
                None => Ok(EntityKey::Region {
                    country,
                    region: r.trim().to_string(),
                }),
            },
        }
    }
}

impl Serialize for EntityKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EntityKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips() {
        for s in [
            "KZ",
            "KZ/AS9198",
            "AS9198",
            "VE/Zulia",
            "VE/Distrito Capital",
        ] {
            let e: EntityKey = s.parse().unwrap();
            assert_eq!(e.to_string(), s);
        }
        assert!("kz".parse::<EntityKey>().is_err());
        assert!("KZ/".parse::<EntityKey>().is_err());
        assert_eq!(
            "KZ/AS1".parse::<EntityKey>().unwrap().parent(),
            Some(EntityKey::Country("KZ".into()))
        );
        assert_eq!("AS1".parse::<EntityKey>().unwrap().parent(), None);
    }
}
