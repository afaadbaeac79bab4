# Writes the bytes of IN as a NUL-terminated C array named NAME into OUT
# (cmake -DIN=... -DOUT=... -DNAME=... -P scripts/embed-text.cmake).
file(READ "${IN}" hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," hex "${hex}")
file(WRITE "${OUT}" "/* generated from ${IN} by scripts/embed-text.cmake */\nconst char ${NAME}[] = {${hex}0};\n")
