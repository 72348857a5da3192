"""The pick stage: a bank and one of its index builds opened as a session, module-level picks, photos.

`FaceBank` (session.py) binds a build to its bank and maps ages, genders and fallbacks to group
plans; `pick_target` & co (api.py) cache one session per build; `pick_for_image` (photo.py) runs
detection and embedding on a real photo first. `PickOptions` (options.py) carries a pick's
options from the API through the session to the picker.
"""
