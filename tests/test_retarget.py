"""Animating your own character (blender_addon/retarget.py) without Blender: ARKit units found
under the spellings characters use, the head bone found in common rigs, and the head's turn
in a bone's own axes turning the bone in the world as the subject's head turned.
(tests/test_blender_video.py keys a character in Blender.)"""

import math

import numpy as np

from blender_addon.retarget import character_yaw, guess_head_bone, head_bone_rotation, match_arkit
from engine.head.arkit import ARKIT_NAMES


def test_arkit_units_are_found_under_common_spellings():
    spellings = {
        "eyeBlinkLeft": "eyeBlinkLeft",  # Apple's, Ready Player Me
        "EyeBlinkRight": "eyeBlinkRight",  # Live Link / MetaHuman curves
        "eyeLookUp_L": "eyeLookUpLeft",  # ICT, Faceit
        "Mouth_Smile_R": "mouthSmileRight",  # Character Creator
        "jaw_open": "jawOpen",  # snake case
        "blendShape1.browInnerUp": "browInnerUp",  # a Maya blend shape node
        "Face:cheekPuff": "cheekPuff",  # a namespace
        "ARKit_mouthPucker": "mouthPucker",  # a prefix
        "A25_Jaw_Forward": "jawForward",  # Polywink's numbered prefix
        "TongueOut": "tongueOut",
    }
    not_units = ["Basis", "Lower_Lip_Left", "mouthSmile", "browUp", "EyeBlink", "Blink_Both"]
    names = list(spellings) + not_units
    m = match_arkit(names, ARKIT_NAMES)
    for key, unit in spellings.items():
        assert m.keys[unit] == [key], (key, unit)
    assert m.unused == not_units
    assert m.n_units == len(spellings) and len(m.missing) == 52 - len(spellings)
    assert "eyeBlinkLeft" not in m.missing and "mouthLeft" in m.missing


def test_several_keys_may_take_one_unit_and_left_is_not_right():
    m = match_arkit(["Head_jawOpen", "Teeth_jawOpen", "mouthLeft", "mouth_right", "eyeSquint_L"], ARKIT_NAMES)
    assert m.keys["jawOpen"] == ["Head_jawOpen", "Teeth_jawOpen"]
    assert m.keys["mouthLeft"] == ["mouthLeft"] and m.keys["mouthRight"] == ["mouth_right"]
    assert m.keys["eyeSquintLeft"] == ["eyeSquint_L"] and "eyeSquintRight" in m.missing
    # an animation's own unit names (a CSV read as lower-first ARKit names) match alike
    m = match_arkit(["EyeBlink_L"], ["eyeBlinkLeft", "jawOpen"])
    assert m.keys == {"eyeBlinkLeft": ["EyeBlink_L"]} and m.missing == ["jawOpen"]


def test_head_bone_of_common_rigs():
    assert guess_head_bone(["mixamorig:Hips", "mixamorig:Neck", "mixamorig:Head", "mixamorig:HeadTop_End"]) == \
        "mixamorig:Head"
    assert guess_head_bone(["root", "ORG-head", "MCH-ROT-head", "head", "DEF-head"]) == "head"  # Rigify
    assert guess_head_bone(["CC_Base_NeckTwist01", "CC_Base_Head", "CC_Base_JawRoot"]) == "CC_Base_Head"
    assert guess_head_bone(["J_Bip_C_Neck", "J_Bip_C_Head"]) == "J_Bip_C_Head"  # VRoid
    assert guess_head_bone(["Hips", "Spine", "Neck"]) == "Neck"  # no head bone: the neck
    assert guess_head_bone(["Hips", "Spine", "HeadTop_End"]) is None  # a leaf bone does not turn a head
    assert guess_head_bone([]) is None


def _rx(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _rz(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q @ np.diag(np.sign(np.diag(r)))
    return q if np.linalg.det(q) > 0 else -q


def test_the_bone_turns_in_the_world_as_the_head_did_turned_with_the_character():
    rng = np.random.default_rng(0)
    for yaw in (0.0, 0.5, -2.0):
        for tilt, scale in ((0.0, 1.0), (math.pi / 2, 0.01)):  # a Blender rig; an FBX import (X 90°, 0.01)
            armature = _rz(yaw) @ _rx(tilt) * scale
            assert math.isclose(character_yaw(armature), yaw, abs_tol=1e-9)
            rest = _rotation(rng)  # the bone's rest axes in armature space
            turn = _rotation(rng)  # the head's turn in Blender's axes (character facing -Y)
            local = head_bone_rotation(turn, rest, armature)
            assert np.allclose(local @ local.T, np.eye(3)) and np.linalg.det(local) > 0
            # the posed bone (parents at rest) relative to its rest, seen in the world
            a = armature / scale
            in_world = a @ (rest @ local @ rest.T) @ a.T
            assert np.allclose(in_world, _rz(yaw) @ turn @ _rz(yaw).T, atol=1e-9)
    # no turn, no pose
    assert np.allclose(head_bone_rotation(np.eye(3), _rotation(rng), _rz(0.3)), np.eye(3))


def test_strength_and_rest_face():
    from blender_addon.retarget import adjust_weights

    w = np.array([[0.1, 0.0, 0.5], [0.4, 0.2, 1.0], [0.1, 0.9, 0.6]])
    assert np.allclose(adjust_weights(w), w)  # the default changes nothing
    assert np.allclose(adjust_weights(w, 2.0), np.clip(2 * w, 0, 1))
    rested = adjust_weights(w, 1.0, rest=w[0])
    assert np.allclose(rested[0], 0.0)  # the rest frame reads neutral
    assert rested[1, 2] == 1.0  # a full unit stays full
    assert np.isclose(rested[1, 0], (0.4 - 0.1) / 0.9) and np.isclose(rested[2, 1], 0.9)
    assert (adjust_weights(w, 0.5, rest=w[1]) >= 0).all()  # below the rest face: 0, not negative
    import pytest

    with pytest.raises(ValueError, match="strength"):
        adjust_weights(w, -1.0)


def test_mirror_swaps_sides_and_turns():
    from blender_addon.retarget import mirror_order, mirror_rotations

    names = ["eyeBlinkLeft", "eyeBlinkRight", "jawOpen", "mouthLeft", "mouthRight", "browDown_L", "browDown_R",
             "cheekSquintLeft"]  # (no twin in this file)
    order = mirror_order(names)
    assert [names[i] for i in order] == ["eyeBlinkRight", "eyeBlinkLeft", "jawOpen", "mouthRight", "mouthLeft",
                                         "browDown_R", "browDown_L", "cheekSquintLeft"]
    # the rotation vector's rule is the reflection S R S of the rotation matrix
    rng = np.random.default_rng(3)
    S = np.diag([-1.0, 1.0, 1.0])
    for _ in range(5):
        r = rng.normal(0, 0.5, 3)
        theta = np.linalg.norm(r)
        k = np.array([[0, -r[2], r[1]], [r[2], 0, -r[0]], [-r[1], r[0], 0]]) / theta
        R = np.eye(3) + np.sin(theta) * k + (1 - np.cos(theta)) * k @ k
        m = mirror_rotations(r)
        km = np.array([[0, -m[2], m[1]], [m[2], 0, -m[0]], [-m[1], m[0], 0]]) / theta
        assert np.allclose(np.eye(3) + np.sin(theta) * km + (1 - np.cos(theta)) * km @ km, S @ R @ S.T)
