"""Sequence tables of the evaluation datasets, as data.

The original hard-codes these in its `lib/test/evaluation/*dataset.py` loaders; here they are plain text
blocks parsed once at import. Only names, folders, frame ranges and classes are kept; the paths the
loaders build from them live in `readers.py`.

- `LASOT_TEST`: the 280 sequences of LaSOT's test split (Protocol II), one class per line, in the
  original's order (which is not alphabetical: `spider` sits after `cattle`, `surfboard-12` before
  `surfboard-4`).
- `LASOT_EXT`: the 150 sequences of the LaSOT extension subset (15 new classes, 10 each).
- `NFS`: `<folder> <last frame> <object class>`; every NFS sequence starts at frame 1, five-digit names,
  result name `nfs_<folder>`, annotation `anno/nfs_<folder>.txt` (30 fps version).
- `UAV123`: `<name> <folder> <first frame> <last frame> <object class>`; result name `uav_<name>`,
  annotation `anno/UAV123/<name>.txt`, six-digit frame names. Long videos are cut into numbered parts
  that share one folder (`bird1_1..3`, `group1_1..4`, `uav1_1..3`, ...); 29 pairs of neighbouring parts
  share their boundary frame (`group1_1` ends and `group1_2` starts at 1333), while `bird1`'s parts and
  `uav1_2`/`uav1_3` leave frames out between them.
- `OTB`: `<name> <first frame> <last frame> <object class>`; frames `<name>/img/%04d.jpg`, annotation
  `<name>/groundtruth_rect.txt`, except the entries in `OTB_FOLDERS`, `OTB_ZERO_PAD`, `OTB_INIT_OMIT`.
"""

from __future__ import annotations

LASOT_TEST = """
airplane-1 airplane-9 airplane-13 airplane-15
basketball-1 basketball-6 basketball-7 basketball-11
bear-2 bear-4 bear-6 bear-17
bicycle-2 bicycle-7 bicycle-9 bicycle-18
bird-2 bird-3 bird-15 bird-17
boat-3 boat-4 boat-12 boat-17
book-3 book-10 book-11 book-19
bottle-1 bottle-12 bottle-14 bottle-18
bus-2 bus-5 bus-17 bus-19
car-2 car-6 car-9 car-17
cat-1 cat-3 cat-18 cat-20
cattle-2 cattle-7 cattle-12 cattle-13
spider-14 spider-16 spider-18 spider-20
coin-3 coin-6 coin-7 coin-18
crab-3 crab-6 crab-12 crab-18
surfboard-12 surfboard-4 surfboard-5 surfboard-8
cup-1 cup-4 cup-7 cup-17
deer-4 deer-8 deer-10 deer-14
dog-1 dog-7 dog-15 dog-19
guitar-3 guitar-8 guitar-10 guitar-16
person-1 person-5 person-10 person-12
pig-2 pig-10 pig-13 pig-18
rubicCube-1 rubicCube-6 rubicCube-14 rubicCube-19
swing-10 swing-14 swing-17 swing-20
drone-13 drone-15 drone-2 drone-7
pool-12 pool-15 pool-3 pool-7
rabbit-10 rabbit-13 rabbit-17 rabbit-19
racing-10 racing-15 racing-16 racing-20
robot-1 robot-19 robot-5 robot-8
sepia-13 sepia-16 sepia-6 sepia-8
sheep-3 sheep-5 sheep-7 sheep-9
skateboard-16 skateboard-19 skateboard-3 skateboard-8
tank-14 tank-16 tank-6 tank-9
tiger-12 tiger-18 tiger-4 tiger-6
train-1 train-11 train-20 train-7
truck-16 truck-3 truck-6 truck-7
turtle-16 turtle-5 turtle-8 turtle-9
umbrella-17 umbrella-19 umbrella-2 umbrella-9
yoyo-15 yoyo-17 yoyo-19 yoyo-7
zebra-10 zebra-14 zebra-16 zebra-17
elephant-1 elephant-12 elephant-16 elephant-18
goldfish-3 goldfish-7 goldfish-8 goldfish-10
hat-1 hat-2 hat-5 hat-18
kite-4 kite-6 kite-10 kite-15
motorcycle-1 motorcycle-3 motorcycle-9 motorcycle-18
mouse-1 mouse-8 mouse-9 mouse-17
flag-3 flag-9 flag-5 flag-2
frog-3 frog-4 frog-20 frog-9
gametarget-1 gametarget-2 gametarget-7 gametarget-13
hand-2 hand-3 hand-9 hand-16
helmet-5 helmet-11 helmet-19 helmet-13
licenseplate-6 licenseplate-12 licenseplate-13 licenseplate-15
electricfan-1 electricfan-10 electricfan-18 electricfan-20
chameleon-3 chameleon-6 chameleon-11 chameleon-20
crocodile-3 crocodile-4 crocodile-10 crocodile-14
gecko-1 gecko-5 gecko-16 gecko-19
fox-2 fox-3 fox-5 fox-20
giraffe-2 giraffe-10 giraffe-13 giraffe-15
gorilla-4 gorilla-6 gorilla-9 gorilla-13
hippo-1 hippo-7 hippo-9 hippo-20
horse-1 horse-4 horse-12 horse-15
kangaroo-2 kangaroo-5 kangaroo-11 kangaroo-14
leopard-1 leopard-7 leopard-16 leopard-20
lion-1 lion-5 lion-12 lion-20
lizard-1 lizard-3 lizard-6 lizard-13
microphone-2 microphone-6 microphone-14 microphone-16
monkey-3 monkey-4 monkey-9 monkey-17
shark-2 shark-3 shark-5 shark-6
squirrel-8 squirrel-11 squirrel-13 squirrel-19
volleyball-1 volleyball-13 volleyball-18 volleyball-19
"""

LASOT_EXT = """
atv-1 atv-2 atv-3 atv-4 atv-5
atv-6 atv-7 atv-8 atv-9 atv-10
badminton-1 badminton-2 badminton-3 badminton-4 badminton-5
badminton-6 badminton-7 badminton-8 badminton-9 badminton-10
cosplay-1 cosplay-10 cosplay-2 cosplay-3 cosplay-4
cosplay-5 cosplay-6 cosplay-7 cosplay-8 cosplay-9
dancingshoe-1 dancingshoe-2 dancingshoe-3 dancingshoe-4 dancingshoe-5
dancingshoe-6 dancingshoe-7 dancingshoe-8 dancingshoe-9 dancingshoe-10
footbag-1 footbag-2 footbag-3 footbag-4 footbag-5
footbag-6 footbag-7 footbag-8 footbag-9 footbag-10
frisbee-1 frisbee-2 frisbee-3 frisbee-4 frisbee-5
frisbee-6 frisbee-7 frisbee-8 frisbee-9 frisbee-10
jianzi-1 jianzi-2 jianzi-3 jianzi-4 jianzi-5
jianzi-6 jianzi-7 jianzi-8 jianzi-9 jianzi-10
lantern-1 lantern-2 lantern-3 lantern-4 lantern-5
lantern-6 lantern-7 lantern-8 lantern-9 lantern-10
misc-1 misc-2 misc-3 misc-4 misc-5
misc-6 misc-7 misc-8 misc-9 misc-10
opossum-1 opossum-2 opossum-3 opossum-4 opossum-5
opossum-6 opossum-7 opossum-8 opossum-9 opossum-10
paddle-1 paddle-2 paddle-3 paddle-4 paddle-5
paddle-6 paddle-7 paddle-8 paddle-9 paddle-10
raccoon-1 raccoon-2 raccoon-3 raccoon-4 raccoon-5
raccoon-6 raccoon-7 raccoon-8 raccoon-9 raccoon-10
rhino-1 rhino-2 rhino-3 rhino-4 rhino-5
rhino-6 rhino-7 rhino-8 rhino-9 rhino-10
skatingshoe-1 skatingshoe-2 skatingshoe-3 skatingshoe-4 skatingshoe-5
skatingshoe-6 skatingshoe-7 skatingshoe-8 skatingshoe-9 skatingshoe-10
wingsuit-1 wingsuit-2 wingsuit-3 wingsuit-4 wingsuit-5
wingsuit-6 wingsuit-7 wingsuit-8 wingsuit-9 wingsuit-10
"""

NFS = """
Gymnastics              368 person
MachLoop_jet             99 aircraft
Skiing_red               69 person
Skydiving               196 person
airboard_1              425 ball
airplane_landing         81 aircraft
airtable_3              482 ball
basketball_1            282 ball
basketball_2            102 ball
basketball_3            421 ball
basketball_6            224 ball
basketball_7            240 person
basketball_player       369 person
basketball_player_2     437 person
beach_flipback_person    61 person head
bee                      45 insect
biker_acrobat           128 bicycle
biker_all_1             113 person
biker_head_2            132 person head
biker_head_3            254 person head
biker_upper_body        194 person
biker_whole_body        572 person
billiard_2              604 ball
billiard_3              698 ball
billiard_6              771 ball
billiard_7              724 ball
billiard_8              778 ball
bird_2                  476 bird
book                    288 other
bottle                 2103 other
bowling_1               303 ball
bowling_2               710 ball
bowling_3               271 ball
bowling_6               260 ball
bowling_ball            275 ball
bunny                   705 mammal
car                    2020 car
car_camaro               36 car
car_drifting            173 car
car_jumping              22 car
car_rc_rolling           62 car
car_rc_rotating          80 car
car_side                108 car
car_white              2063 car
cheetah                 167 mammal
cup                    1281 other
cup_2                   182 other
dog                    1030 dog
dog_1                   168 dog
dog_2                   594 dog
dog_3                   200 dog
dogs                    198 dog
dollar                 1426 other
drone                    70 aircraft
ducks_lake              107 bird
exit                    359 other
first                   435 other
flower                  448 other
footbal_skill           131 ball
helicopter              310 aircraft
horse_jumping           117 horse
horse_running           139 horse
iceskating_6            603 person
jellyfish_5             746 invertebrate
kid_swing               169 person
motorcross               39 vehicle
motorcross_kawasaki      65 vehicle
parkour                  58 person head
person_scooter          413 person
pingpong_2             1277 ball
pingpong_7             1290 ball
pingpong_8              296 ball
purse                   968 other
rubber                 1328 other
running                 677 person
running_100_m           313 person
running_100_m_2         337 person
running_2               363 person
shuffleboard_1           42 other
shuffleboard_2           41 other
shuffleboard_4           62 other
shuffleboard_5           32 other
shuffleboard_6           52 other
shuffletable_2          372 other
shuffletable_3          368 other
shuffletable_4          101 other
ski_long                274 person
soccer_ball             163 ball
soccer_ball_2          1934 ball
soccer_ball_3          1381 ball
soccer_player_2         475 person
soccer_player_3         319 person
stop_sign               302 other
suv                    2584 car
tiger                  1556 mammal
walking                 555 person
walking_3              1427 person
water_ski_2              47 person
yoyo                     67 other
zebra_fish              671 fish
"""

UAV123 = """
bike1       bike1           1  3085 vehicle
bike2       bike2           1   553 vehicle
bike3       bike3           1   433 vehicle
bird1_1     bird1           1   253 bird
bird1_2     bird1         775  1477 bird
bird1_3     bird1        1573  2437 bird
boat1       boat1           1   901 vessel
boat2       boat2           1   799 vessel
boat3       boat3           1   901 vessel
boat4       boat4           1   553 vessel
boat5       boat5           1   505 vessel
boat6       boat6           1   805 vessel
boat7       boat7           1   535 vessel
boat8       boat8           1   685 vessel
boat9       boat9           1  1399 vessel
building1   building1       1   469 other
building2   building2       1   577 other
building3   building3       1   829 other
building4   building4       1   787 other
building5   building5       1   481 other
car1_1      car1            1   751 car
car1_2      car1          751  1627 car
car1_3      car1         1627  2629 car
car10       car10           1  1405 car
car11       car11           1   337 car
car12       car12           1   499 car
car13       car13           1   415 car
car14       car14           1  1327 car
car15       car15           1   469 car
car16_1     car16           1   415 car
car16_2     car16         415  1993 car
car17       car17           1  1057 car
car18       car18           1  1207 car
car1_s      car1_s          1  1475 car
car2        car2            1  1321 car
car2_s      car2_s          1   320 car
car3        car3            1  1717 car
car3_s      car3_s          1  1300 car
car4        car4            1  1345 car
car4_s      car4_s          1   830 car
car5        car5            1   745 car
car6_1      car6            1   487 car
car6_2      car6          487  1807 car
car6_3      car6         1807  2953 car
car6_4      car6         2953  3925 car
car6_5      car6         3925  4861 car
car7        car7            1  1033 car
car8_1      car8            1  1357 car
car8_2      car8         1357  2575 car
car9        car9            1  1879 car
group1_1    group1          1  1333 person
group1_2    group1       1333  2515 person
group1_3    group1       2515  3925 person
group1_4    group1       3925  4873 person
group2_1    group2          1   907 person
group2_2    group2        907  1771 person
group2_3    group2       1771  2683 person
group3_1    group3          1  1567 person
group3_2    group3       1567  2827 person
group3_3    group3       2827  4369 person
group3_4    group3       4369  5527 person
person1     person1         1   799 person
person10    person10        1  1021 person
person11    person11        1   721 person
person12_1  person12        1   601 person
person12_2  person12      601  1621 person
person13    person13        1   883 person
person14_1  person14        1   847 person
person14_2  person14      847  1813 person
person14_3  person14     1813  2923 person
person15    person15        1  1339 person
person16    person16        1  1147 person
person17_1  person17        1  1501 person
person17_2  person17     1501  2347 person
person18    person18        1  1393 person
person19_1  person19        1  1243 person
person19_2  person19     1243  2791 person
person19_3  person19     2791  4357 person
person1_s   person1_s       1  1600 person
person2_1   person2         1  1189 person
person2_2   person2      1189  2623 person
person20    person20        1  1783 person
person21    person21        1   487 person
person22    person22        1   199 person
person23    person23        1   397 person
person2_s   person2_s       1   250 person
person3     person3         1   643 person
person3_s   person3_s       1   505 person
person4_1   person4         1  1501 person
person4_2   person4      1501  2743 person
person5_1   person5         1   877 person
person5_2   person5       877  2101 person
person6     person6         1   901 person
person7_1   person7         1  1249 person
person7_2   person7      1249  2065 person
person8_1   person8         1  1075 person
person8_2   person8      1075  1525 person
person9     person9         1   661 person
truck1      truck1          1   463 truck
truck2      truck2          1   385 truck
truck3      truck3          1   535 truck
truck4_1    truck4          1   577 truck
truck4_2    truck4        577  1261 truck
uav1_1      uav1            1  1555 aircraft
uav1_2      uav1         1555  2377 aircraft
uav1_3      uav1         2473  3469 aircraft
uav2        uav2            1   133 aircraft
uav3        uav3            1   265 aircraft
uav4        uav4            1   157 aircraft
uav5        uav5            1   139 aircraft
uav6        uav6            1   109 aircraft
uav7        uav7            1   373 aircraft
uav8        uav8            1   301 aircraft
wakeboard1  wakeboard1      1   421 person
wakeboard10 wakeboard10     1   469 person
wakeboard2  wakeboard2      1   733 person
wakeboard3  wakeboard3      1   823 person
wakeboard4  wakeboard4      1   697 person
wakeboard5  wakeboard5      1  1675 person
wakeboard6  wakeboard6      1  1165 person
wakeboard7  wakeboard7      1   199 person
wakeboard8  wakeboard8      1  1543 person
wakeboard9  wakeboard9      1   355 person
"""

OTB = """
Basketball      1   725 person
Biker           1   142 person head
Bird1           1   408 bird
Bird2           1    99 bird
BlurBody        1   334 person
BlurCar1      247   988 car
BlurCar2        1   585 car
BlurCar3        3   359 car
BlurCar4       18   397 car
BlurFace        1   493 face
BlurOwl         1   631 other
Board           1   698 other
Bolt            1   350 person
Bolt2           1   293 person
Box             1  1161 other
Boy             1   602 face
Car1            1  1020 car
Car2            1   913 car
Car24           1  3059 car
Car4            1   659 car
CarDark         1   393 car
CarScale        1   252 car
ClifBar         1   472 other
Coke            1   291 other
Couple          1   140 person
Coupon          1   327 other
Crossing        1   120 person
Crowds          1   347 person
Dancer          1   225 person
Dancer2         1   150 person
David         300   770 face
David2          1   537 face
David3          1   252 person
Deer            1    71 mammal
Diving          1   215 person
Dog             1   127 dog
Dog1            1  1350 dog
Doll            1  3872 other
DragonBaby      1   113 face
Dudek           1  1145 face
FaceOcc1        1   892 face
FaceOcc2        1   812 face
Fish            1   476 other
FleetFace       1   707 face
Football        1   362 person head
Football1       1    74 face
Freeman1        1   326 face
Freeman3        1   460 face
Freeman4        1   283 face
Girl            1   500 face
Girl2           1  1500 person
Gym             1   767 person
Human2          1  1128 person
Human3          1  1698 person
Human4_2        1   667 person
Human5          1   713 person
Human6          1   792 person
Human7          1   250 person
Human8          1   128 person
Human9          1   305 person
Ironman         1   166 person head
Jogging_1       1   307 person
Jogging_2       1   307 person
Jump            1   122 person
Jumping         1   313 face
KiteSurf        1    84 face
Lemming         1  1336 other
Liquor          1  1741 other
Man             1   134 face
Matrix          1   100 person head
Mhyang          1  1490 face
MotorRolling    1   164 vehicle
MountainBike    1   228 bicycle
Panda           1  1000 mammal
RedTeam         1  1918 vehicle
Rubik           1  1997 other
Shaking         1   365 face
Singer1         1   351 person
Singer2         1   366 person
Skater          1   160 person
Skater2         1   435 person
Skating1        1   400 person
Skating2_1      1   473 person
Skating2_2      1   473 person
Skiing          1    81 person
Soccer          1   392 face
Subway          1   175 person
Surfer          1   376 person head
Suv             1   945 car
Sylvester       1  1345 other
Tiger1          1   354 other
Tiger2          1   365 other
Toy             1   271 other
Trans           1   124 other
Trellis         1   569 face
Twinnings       1   472 other
Vase            1   271 other
Walking         1   412 person
Walking2        1   500 person
Woman           1   597 person
"""

# Two targets annotated in one video, and Human4 whose only evaluated target is the second one.
OTB_FOLDERS = {
    "Human4_2": ("Human4", "groundtruth_rect.2.txt"),
    "Jogging_1": ("Jogging", "groundtruth_rect.1.txt"),
    "Jogging_2": ("Jogging", "groundtruth_rect.2.txt"),
    "Skating2_1": ("Skating2", "groundtruth_rect.1.txt"),
    "Skating2_2": ("Skating2", "groundtruth_rect.2.txt"),
}
# Board's frames are named %05d.jpg; every other OTB sequence uses %04d.jpg.
OTB_ZERO_PAD = {"Board": 5}
# The original drops Tiger1's first 5 frames and annotation rows (the OTB toolkit's "initOmit").
OTB_INIT_OMIT = {"Tiger1": 5}


def rows(table: str) -> list[list[str]]:
  """Non-empty lines of a table block split on whitespace; the last column (object class) may hold spaces
  and is left to the caller to re-join."""
  return [line.split() for line in table.strip().splitlines() if line.strip()]


def names(table: str) -> tuple[str, ...]:
  return tuple(table.split())
